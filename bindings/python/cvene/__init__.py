"""cvene: pyvene's interventions at native speed.

    import cvene
    model = cvene.load("assets/demo-gpt2")                     # a local Hugging Face directory
    pv = cvene.IntervenableModel({"representations": [{"layer": 2, "component": "block_output"}]}, model)
    _, out = pv({"input_ids": base}, [{"input_ids": source}], unit_locations={"sources->base": 3})
    out.logits                                                # numpy (torch when the inputs are)

docs/python.md is the tutorial; every function calls the C library (include/cvene.h)."""
from ._lib import CveneError
from .analysis import DatasetSweepResult, Generation, SweepResult, generate, sweep, sweep_dataset, trace
from .core import Model, Tokenizer, load
from .intervenable import IntervenableModel, IntervenableModelOutput, IntervenableOutputs, Outputs
from .training import Dataset, Probe, Trainer, collect, train
from ._lib import lib as _lib_handle

__version__: str = _lib_handle.cvene_version().decode()


def cuda_available() -> bool:
    """True when the library was built with its CUDA backend and a GPU is visible."""
    return bool(_lib_handle.cvene_cuda_available())


__all__ = ["load", "Model", "Tokenizer", "IntervenableModel", "IntervenableOutputs", "IntervenableModelOutput",
           "Outputs", "sweep", "sweep_dataset", "DatasetSweepResult", "trace", "generate", "Dataset", "Trainer", "train", "collect", "Probe", "SweepResult", "Generation", "CveneError", "cuda_available",
           "__version__"]
