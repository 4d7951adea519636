"""Lightning modules: supernet search and subnet retraining."""
