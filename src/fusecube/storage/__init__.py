"""Writing outputs safely: atomic replacement of files and folders, store manifests."""
