"""Methods, one file each, behind ``base.MetaLearner``."""
