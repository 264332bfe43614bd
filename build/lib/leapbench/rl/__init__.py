"""Reinforcement learning on Atari: the ALE environments and the A2C task learning process."""
