"""Paper experiments that need more than one training run (``python -m modrl.experiments.<name>``)."""
