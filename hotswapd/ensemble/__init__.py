"""Ensembles: a model version whose vectors combine those of other versions (``backend = "ensemble"``).

settings   its config keys (members, weights, combine) and the checks that need the whole config
embedder   the combination, run on the inference thread over the members' own embedders
assemble   what the registry does instead of loading weights: lease the members, build the embedder
"""
