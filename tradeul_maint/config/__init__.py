"""The settings (file, environment, options; validated once) and the log sinks they set up."""
