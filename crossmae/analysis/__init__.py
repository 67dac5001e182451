"""Analysis tools behind tools/: the paper's measurements, repeatable on any checkpoint.

attention       decoder attention mass (MAE) and cross-attention maps (CrossMAE)
reconstruction  per-block readouts and PSNR on predicted patches
inter_block     learned decoder-block x encoder-feature weights
flops           FLOPs (with attention) and parameter counts, encoder / decoder
benchmark       interleaved training-step timing, memory, images/s, MFU
collect         results.json scanning, the paper-shaped tables and training curves
figures         matplotlib figures for all of the above
tables          Markdown / CSV / LaTeX writers
loading         rebuild a model from any pretraining checkpoint; evaluation images
"""
