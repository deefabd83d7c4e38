"""Other tools' formats: AUTOMATIC1111's generation text ("infotext") read from a text file,
a PNG text chunk or a JPEG/WebP EXIF comment, and turned into a Studio pipeline
(`studio import`). This folder's map; it imports nothing."""
