"""One question on one image: the pipeline (reasoner then segmenter), slices and labels on the image grid, the service a
server holds (lazy models, the one owner of reload), the settings, and the record a result and a saved label keep."""
