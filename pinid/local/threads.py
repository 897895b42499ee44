"""One worker thread for a FAISS search that can run while Python works on the last one's results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def search_worker(name: str) -> ThreadPoolExecutor:
    """A one-thread pool whose FAISS searches use every core but one, which the caller's Python keeps.

    OpenMP's thread count is per thread, so the caller's own searches keep
    theirs (and a user's ``OMP_NUM_THREADS`` still bounds both).
    """
    import faiss

    threads = max(1, faiss.omp_get_max_threads() - 1)
    return ThreadPoolExecutor(max_workers=1, initializer=faiss.omp_set_num_threads, initargs=(threads,),
                              thread_name_prefix=name)
