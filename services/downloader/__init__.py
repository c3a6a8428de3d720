"""downloader: fetch the files the model produced."""
