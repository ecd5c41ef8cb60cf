"""`mlattack` with the toy source registered, runnable as a script so Lightning's DDP launcher can start ranks."""

from mlattack.cli import main
from mlattack.data.datamodule import SOURCES

SOURCES["toy"] = ("tests.evaluation.toy", "ToyColours", False)

if __name__ == "__main__":
    main()
