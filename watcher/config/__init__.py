"""Configuration: the YAML file and the environment."""
