"""The bottom layer: the Keras graph (nodes, walks, rebuild), BatchNorm folding, the training-layer
protocol, and every Keras/TF private touch (`compat`). Imports nothing else of tfcompress."""
