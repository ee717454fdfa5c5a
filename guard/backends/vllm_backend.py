"""In-process vLLM backend (optional: ``pip install guardsite[gpu]``, vLLM 0.31).

* ``LLM(..., enable_prefix_caching=True, enable_lora=True)``: the policy block
  comes first in every input, so its KV blocks are shared across requests.
* Structured outputs: every answer is constrained to ``contract.answer_regex``
  (``SamplingParams(structured_outputs=StructuredOutputsParams(regex=...))``,
  the API that replaced ``guided_decoding`` in vLLM 0.12), so it always
  parses; ``constrained=False`` turns that off to measure real parse failures.
* One ``LoRARequest`` per request from ``GuardRequest.adapter_path`` (or the
  model version's adapter), so each policy/tenant can have its own fine-tune.
* Fast mode generates only the label lines (stop at ``"\\nexplanation:"``) and
  takes ``confidence`` from the top log-probabilities at the primary label.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Protocol

from guard import contract
from guard.backends.base import GuardError, GuardRequest, setting
from guard.contract import SAFE, UNSAFE, Verdict

LABEL_LINES_TOKENS = 48
TOP_LOGPROBS = 20



def import_vllm() -> Any:
    """``vllm`` or a GuardError saying how to get it."""
    try:
        import vllm
    except ImportError as error:
        raise GuardError(
            "the vllm backend needs vLLM, which is not installed: install the gpu extra "
            "(pip install 'guardsite[gpu]', vllm==0.31.0) on a CUDA machine, or set "
            "GUARD_BACKEND=transformers"
        ) from error
    return vllm


class ModelWeights(Protocol):
    """What the backend loads: ``guard.runtime.ResolvedModel`` has this shape (named here, not imported,
    so that the runtime, which creates backends, stays the only one of the two that imports the other)."""

    @property
    def base_path(self) -> Path: ...
    @property
    def adapter_path(self) -> Path | None: ...
    @property
    def temperature(self) -> float | None: ...


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        resolved: ModelWeights,
        *,
        gpu_memory_utilization: float = 0.85,
        max_loras: int = 8,
        max_lora_rank: int = 64,
        max_input_tokens: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        vllm = import_vllm()
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import StructuredOutputsParams

        self._LoRARequest = LoRARequest
        self._StructuredOutputsParams = StructuredOutputsParams
        self._SamplingParams = vllm.SamplingParams
        self.resolved = resolved
        self.temperature = resolved.temperature
        self.max_input_tokens = int(max_input_tokens or setting("GUARD_MAX_INPUT_TOKENS", 2048))
        self.max_new_tokens = int(max_new_tokens or setting("GUARD_MAX_NEW_TOKENS", 96))
        self.llm = vllm.LLM(
            model=str(resolved.base_path),
            enable_prefix_caching=True,
            enable_lora=True,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            max_model_len=self.max_input_tokens + self.max_new_tokens + LABEL_LINES_TOKENS,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype="bfloat16",
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._lora_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def _lora(self, path: str | Path | None) -> Any:
        if not path:
            return None
        key = str(Path(path).expanduser().resolve())
        with self._lock:
            if key not in self._lora_ids:
                self._lora_ids[key] = len(self._lora_ids) + 1  # ids start at 1
        return self._LoRARequest(lora_name=key, lora_int_id=self._lora_ids[key], lora_path=key)

    def _input_ids(self, text: str) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token", None) or ""
        return list(self.tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos))))

    def classify_batch(self, requests: list[GuardRequest], *, constrained: bool = True) -> list[Verdict]:
        if not requests:
            return []
        prompts: list[dict[str, Any]] = []
        params: list[Any] = []
        loras: list[Any] = []
        rendered_all = []
        for request in requests:
            if not isinstance(request.prompt, str) or not request.prompt.strip():
                raise GuardError("the prompt is empty: there is nothing to judge")
            spec = contract.as_spec(request.policy)
            skeleton = self._input_ids(contract.render(spec, "x", None, "fast").to_text(self.tokenizer))
            budget = self.max_input_tokens - len(skeleton) - LABEL_LINES_TOKENS
            if budget < 16:
                raise GuardError("the policy alone fills GUARD_MAX_INPUT_TOKENS; no room for the conversation")
            rendered = contract.render(
                spec, request.prompt, request.response, request.mode, tokenizer=self.tokenizer, max_text_tokens=budget
            )
            rendered_all.append((spec, rendered))
            prompts.append({"prompt_token_ids": self._input_ids(rendered.to_text(self.tokenizer))})
            fast = request.mode == "fast"
            params.append(
                self._SamplingParams(
                    temperature=0.0,
                    max_tokens=LABEL_LINES_TOKENS + (0 if fast else self.max_new_tokens),
                    stop=[contract.FAST_STOP] if fast else [],
                    logprobs=TOP_LOGPROBS,
                    structured_outputs=self._StructuredOutputsParams(
                        regex=contract.answer_regex(spec, rendered.has_response)
                    )
                    if constrained
                    else None,
                )
            )
            loras.append(self._lora(request.adapter_path or self.resolved.adapter_path))
        outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        verdicts = []
        for (spec, rendered), output in zip(rendered_all, outputs, strict=True):
            completion = output.outputs[0]
            verdict = contract.verdict_from_generation(completion.text, spec, rendered)
            if verdict.parse_error is None:
                verdict.confidence = self._confidence(completion, rendered.has_response)
            verdicts.append(verdict)
        return verdicts

    def _confidence(self, completion: Any, has_response: bool) -> float | None:
        """P(unsafe) at the primary label, renormalised over safe/unsafe, from top log-probs."""
        logprobs = getattr(completion, "logprobs", None)
        if not logprobs:
            return None
        target = contract.primary_field(has_response)
        safe_id = self.tokenizer.encode(f" {SAFE}", add_special_tokens=False)[0]
        unsafe_id = self.tokenizer.encode(f" {UNSAFE}", add_special_tokens=False)[0]
        text = ""
        for token_id, position in zip(completion.token_ids, logprobs, strict=False):
            if text.endswith(f"{target}:") and token_id in (safe_id, unsafe_id):
                safe = position.get(safe_id)
                unsafe = position.get(unsafe_id)
                safe_lp = safe.logprob if safe is not None else -math.inf
                unsafe_lp = unsafe.logprob if unsafe is not None else -math.inf
                if self.temperature:
                    safe_lp, unsafe_lp = safe_lp / self.temperature, unsafe_lp / self.temperature
                top = max(safe_lp, unsafe_lp)
                if top == -math.inf:
                    return None
                return math.exp(unsafe_lp - top) / (math.exp(safe_lp - top) + math.exp(unsafe_lp - top))
            text += self.tokenizer.decode([token_id])
        return None
