"""The lab: the label-budget sweep, its points and the study's controls, and sharding it across machines."""
