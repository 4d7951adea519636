import torch

# The suite's models are tiny: one thread beats two (thread hand-offs cost more than the work).
torch.set_num_threads(1)
