"""GRPO retraining of the reasoner (never imported by serving): config, loss, rollouts, the Lightning module, export,
rewards, the run and its command line, retraining from saved labels."""
