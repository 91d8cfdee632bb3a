"""Studies built on the library: models, data, training and the hooks of a campaign."""
