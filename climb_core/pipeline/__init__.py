"""The stages that turn a corpus into described clusters and token files, and the table that orders them."""
