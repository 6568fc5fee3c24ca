"""MLflow: store set-up, run lifecycle, what gets logged and how it is read back."""
