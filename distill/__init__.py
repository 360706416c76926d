"""distill: the SDXS training recipe (stages a-d) and the toy run that made the shipped model;
distill/README.md describes both."""
