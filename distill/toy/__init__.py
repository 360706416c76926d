"""distill.toy: the two-core toy run (generated shapes, a teacher trained from scratch, stages
a-d, evaluation, the shipped model and its card)."""
