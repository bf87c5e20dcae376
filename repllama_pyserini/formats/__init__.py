"""Reading and writing the IR formats, one reader per format (``file:line: what`` on bad input):
corpora (:mod:`.corpus`), topics, qrels, runs, rank_llm candidates, Tevatron and DPR training data, collections."""
from .candidates import Candidates, candidates_to_trec, is_candidates, read_candidates
from .collections import beir_dataset, collection_files, conventions_of_qrels, data_dir
from .corpus import Doc, iter_corpus, load_docs
from .files import atomic_write, require_file
from .qrels import Qrels, read_qrels
from .runs import Run, read_run, sorted_hits, top_hits, write_run
from .tevatron import Group, Passage, read_groups, write_groups
from .topics import read_topics

__all__ = ["Candidates", "candidates_to_trec", "is_candidates", "read_candidates", "beir_dataset", "collection_files",
           "conventions_of_qrels", "data_dir", "Doc", "iter_corpus", "load_docs", "atomic_write", "require_file",
           "Qrels", "read_qrels", "Run", "read_run", "sorted_hits", "top_hits", "write_run", "Group", "Passage",
           "read_groups", "write_groups", "read_topics"]
