"""Reference models for examples and benchmarks: `zoo` builds seven small architectures on the
digits data, in Keras 3 and as `tf_keras` twins with identical weights (the peer tfmot runs on).
Nothing in the library imports this package."""
