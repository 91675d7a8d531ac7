"""The Shelving service: the main storage, which knows which books are off the shelves."""
