"""Decoding with a state in the tests: a prompt, then one position at a time."""
import torch


def decode_in_steps(step, inputs: torch.Tensor, prompt: int, state):
    """Feeds inputs[:, :prompt] (when prompt > 0), then every later position alone, through
    step(chunk, state) -> (output, state); returns the outputs joined along time and the last state."""
    outputs = []
    if prompt:
        output, state = step(inputs[:, :prompt], state)
        outputs.append(output)
    for t in range(prompt, inputs.shape[1]):
        output, state = step(inputs[:, t : t + 1], state)
        outputs.append(output)
    return torch.cat(outputs, dim=1), state
