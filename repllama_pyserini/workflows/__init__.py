"""Multi-stage workflows built from the stage commands: the cached pipeline (:mod:`.pipeline`, :mod:`.stages`), Anserini-style regressions (:mod:`.regressions`) and the README demo (:mod:`.demo`)."""
