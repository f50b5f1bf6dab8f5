"""The command-line programs, one module each: train (dacer2-train), eval (dacer2-eval), plot (dacer2-plot),
sweep (dacer2-sweep) and export (dacer2-export). Each parses a dataclass with tyro and calls the library; the heavy
imports wait until after parsing so that --help stays fast, which is why this file imports nothing."""
