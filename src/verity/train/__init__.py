"""Training: the RL reference loop, the SFT loop, the learner, checkpoints, metrics and plots."""
