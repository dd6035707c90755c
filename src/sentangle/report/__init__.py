"""Tables, plots and branch diagnostics: formatting only, no training and no file loading."""
