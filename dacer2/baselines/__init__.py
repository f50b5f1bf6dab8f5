"""Comparison policies' networks, trained by the same agent and loop as DACER2 through a policy head
(dacer2/algo/heads.py): --algo gaussian's GaussianActor."""
