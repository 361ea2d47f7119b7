"""Variants in parallel: a sweep's runs in several processes at once (`diffformer train SWEEP --jobs N`).

Each worker process takes its share of the CPU cores (torch threads = cores ÷ jobs) or, when several
GPUs are visible, one GPU of its own (CUDA_VISIBLE_DEVICES), and trains the variants handed to it
one at a time exactly as the sequential sweep would (resuming started ones, skipping finished ones).
Progress bars stay off in workers; the sweep reports each variant as it starts and ends.
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed


def _start_worker(slots, threads: int) -> None:
    import torch

    slot = slots.get()
    if slot is not None:  # a GPU of its own
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
    torch.set_num_threads(threads)


def _train_one(variant, retrain: bool):
    from diffformer.run_folder import RunFolder
    from diffformer.training.loop import train

    started = RunFolder(variant.run_dir).is_occupied()
    return train(variant, resume=started, retrain=retrain)


def train_in_processes(variants: list, retrain: bool, jobs: int, sweep_listener) -> list:
    """Every variant's TrainResult, in the order given; the first failure is raised after all have run."""
    import torch

    gpus = torch.cuda.device_count()
    jobs = min(jobs, len(variants), gpus) if gpus > 1 else min(jobs, len(variants))
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for worker in range(jobs):
        slots.put(worker if gpus > 1 else None)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results, failure = [None] * len(variants), None
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(slots, threads)) as pool:
        futures = {}
        for index, variant in enumerate(variants):
            sweep_listener.on_variant_start(variant.run_dir.name, variant.run_dir, False)
            futures[pool.submit(_train_one, variant, retrain)] = index
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as error:  # reported after the other variants finish
                failure = failure or error
                continue
            sweep_listener.on_variant_end(variants[index].run_dir.name, results[index])
    if failure is not None:
        raise failure
    return results
