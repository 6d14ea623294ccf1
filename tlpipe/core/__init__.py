"""The core path: params, data, the one model builder, by-name transfer, training and the report."""
