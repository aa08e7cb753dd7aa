"""What leaves the workspace: a search's mixture and the dataset sampled by it, trainer formats, the decontamination report."""
