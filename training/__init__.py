"""open_clip training, the webdataset loader, zero- and few-shot evaluation, and prediction."""
