"""Training: the GAN LightningModule, trainer factory, callbacks, loggers, DDP, run folder, resume."""
