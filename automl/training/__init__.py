"""Training: optimizers, LR schedules, augmentation and the fit function trials call."""
