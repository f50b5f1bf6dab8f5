"""Comparison policies trained by the same loop as DACER2 (--algo gaussian): the actor and the agent are separate
modules so that loading a baseline policy for deployment never imports the training code."""
