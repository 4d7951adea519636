"""Command-line entry points: thin `@hydra.main` wrappers over configs/{search,retrain,export}.yaml."""
