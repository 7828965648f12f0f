"""Per-face processors behind one contract (contract.py): identity, warp (the CPU default), and the learned
recasters, stylegan and fomm (learned.py, PyTorch, imported only where one is asked for); routing by cast."""
