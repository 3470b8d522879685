"""The block machinery between the kernel methods and the engines.

- :mod:`.tiling`: ``compute_gram``, the block loop: in-RAM or ``out="K.npy"`` outputs,
  worker threads, progress, the writer and sync threads, resume;
- :mod:`.tile_plan`: block edges and worker counts from the memory budget and caches;
- :mod:`.io`: ``.npy`` block files (buffered ``pwrite`` or page-aligned O_DIRECT);
- :mod:`.journal`: the resume journal (blocks done, per-block checksums, the run key).
"""
