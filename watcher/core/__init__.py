"""The pure core: parsing-free logic over frozen data. No I/O, no clock reads, no sleeping."""
