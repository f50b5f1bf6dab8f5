"""Training runs: the loop, run setup, loop state, checkpoints and resume, the replay buffer, metrics, the phase
clock, and sweeps of many runs."""
