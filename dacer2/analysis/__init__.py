"""Reading finished runs: run directories, learning-curve plots, evaluation episodes, the multimodality metric and
its figure, videos."""
