"""bulk_classify: the images of an archive or a gs:// prefix, classified as a BentoML task."""
