"""Looking at the data: streaming statistics with plots, a self-contained HTML preview, filters and dedup.

Example:
    >>> import llava_zh
    >>> ds = llava_zh.load_dataset("sample")                                      # doctest: +SKIP
    >>> llava_zh.stats(ds, out_dir="stats/")                                      # doctest: +SKIP
    >>> llava_zh.preview(ds, "preview.html", n=50, seed=0)                         # doctest: +SKIP
    >>> result = llava_zh.filter_dataset(ds, ["duplicate_image", "near_duplicate_answer"])  # doctest: +SKIP
    >>> result.kept, result.counts                                                 # doctest: +SKIP
"""
