"""Everything that works on TFLite bytes: the plain conversion of a traceable model, calibration,
byte passes (requantize, shared vectors, INT4, 4-bit levels), flatbuffer read/write, inspection,
the LiteRT runtime and the Edge TPU report.

Imports only `tfcompress.core`. `inspect`, `edgetpu_report` and the runtime need only LiteRT and
the flatbuffer schema; the conversion modules load TensorFlow, so this package imports none of
its modules eagerly.
"""
