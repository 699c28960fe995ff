from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("version", "kind", "body")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    version: int
    kind: str
    body: bytes
    def __init__(self, version: _Optional[int] = ..., kind: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class FitPlan(_message.Message):
    __slots__ = ("run_id", "teacher_json", "generator_json", "teacher_channels", "dp_json", "samples_per_class", "min_class_members", "reference_models", "teacher_resample")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TEACHER_JSON_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_JSON_FIELD_NUMBER: _ClassVar[int]
    TEACHER_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DP_JSON_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLASS_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MODELS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_RESAMPLE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    teacher_json: str
    generator_json: str
    teacher_channels: int
    dp_json: str
    samples_per_class: int
    min_class_members: int
    reference_models: int
    teacher_resample: bool
    def __init__(self, run_id: _Optional[str] = ..., teacher_json: _Optional[str] = ..., generator_json: _Optional[str] = ..., teacher_channels: _Optional[int] = ..., dp_json: _Optional[str] = ..., samples_per_class: _Optional[int] = ..., min_class_members: _Optional[int] = ..., reference_models: _Optional[int] = ..., teacher_resample: _Optional[bool] = ...) -> None: ...

class FitReport(_message.Message):
    __slots__ = ("site_id", "run_id", "num_members", "num_holdout", "class_names", "image_shape", "member_class_counts", "teacher_holdout_accuracy", "generator_final_loss", "teacher_seconds", "generator_seconds", "generator_summary_json", "dp_json")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_CLASS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_HOLDOUT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    DP_JSON_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    num_members: int
    num_holdout: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    member_class_counts: _containers.RepeatedScalarFieldContainer[int]
    teacher_holdout_accuracy: float
    generator_final_loss: float
    teacher_seconds: float
    generator_seconds: float
    generator_summary_json: str
    dp_json: str
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., num_members: _Optional[int] = ..., num_holdout: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., image_shape: _Optional[_Iterable[int]] = ..., member_class_counts: _Optional[_Iterable[int]] = ..., teacher_holdout_accuracy: _Optional[float] = ..., generator_final_loss: _Optional[float] = ..., teacher_seconds: _Optional[float] = ..., generator_seconds: _Optional[float] = ..., generator_summary_json: _Optional[str] = ..., dp_json: _Optional[str] = ...) -> None: ...

class SynthesisRequest(_message.Message):
    __slots__ = ("run_id", "round", "per_class", "temperature", "oversample")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    per_class: _containers.RepeatedScalarFieldContainer[int]
    temperature: float
    oversample: float
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., per_class: _Optional[_Iterable[int]] = ..., temperature: _Optional[float] = ..., oversample: _Optional[float] = ...) -> None: ...

class SyntheticShard(_message.Message):
    __slots__ = ("site_id", "run_id", "round", "count", "height", "width", "channels", "images", "num_classes", "soft_labels", "hard_labels", "summary", "nonce", "recipient_key_id", "summary_json", "images_webp", "soft_labels_float16", "hard_labels_compact")
    class SummaryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SOFT_LABELS_FIELD_NUMBER: _ClassVar[int]
    HARD_LABELS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGES_WEBP_FIELD_NUMBER: _ClassVar[int]
    SOFT_LABELS_FLOAT16_FIELD_NUMBER: _ClassVar[int]
    HARD_LABELS_COMPACT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    round: int
    count: int
    height: int
    width: int
    channels: int
    images: bytes
    num_classes: int
    soft_labels: bytes
    hard_labels: bytes
    summary: _containers.ScalarMap[str, str]
    nonce: bytes
    recipient_key_id: str
    summary_json: str
    images_webp: _containers.RepeatedScalarFieldContainer[bytes]
    soft_labels_float16: bytes
    hard_labels_compact: bytes
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., count: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., images: _Optional[bytes] = ..., num_classes: _Optional[int] = ..., soft_labels: _Optional[bytes] = ..., hard_labels: _Optional[bytes] = ..., summary: _Optional[_Mapping[str, str]] = ..., nonce: _Optional[bytes] = ..., recipient_key_id: _Optional[str] = ..., summary_json: _Optional[str] = ..., images_webp: _Optional[_Iterable[bytes]] = ..., soft_labels_float16: _Optional[bytes] = ..., hard_labels_compact: _Optional[bytes] = ...) -> None: ...

class SignedPayload(_message.Message):
    __slots__ = ("body", "signature", "signer_key_id")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    signer_key_id: str
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signer_key_id: _Optional[str] = ...) -> None: ...

class SealedEnvelope(_message.Message):
    __slots__ = ("version", "kind", "sender", "run_id", "round", "recipient_key_id", "ephemeral_public_key", "aes_nonce", "ciphertext")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    AES_NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    version: int
    kind: str
    sender: str
    run_id: str
    round: int
    recipient_key_id: str
    ephemeral_public_key: bytes
    aes_nonce: bytes
    ciphertext: bytes
    def __init__(self, version: _Optional[int] = ..., kind: _Optional[str] = ..., sender: _Optional[str] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., recipient_key_id: _Optional[str] = ..., ephemeral_public_key: _Optional[bytes] = ..., aes_nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class RawArray(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class AuditCandidate(_message.Message):
    __slots__ = ("run_id", "site_id", "recipient_key_id", "nonce", "student_config_json", "student_weights", "released_images", "reference_models", "lira")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    STUDENT_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    STUDENT_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MODELS_FIELD_NUMBER: _ClassVar[int]
    LIRA_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    site_id: str
    recipient_key_id: str
    nonce: bytes
    student_config_json: str
    student_weights: _containers.RepeatedCompositeFieldContainer[RawArray]
    released_images: RawArray
    reference_models: int
    lira: bool
    def __init__(self, run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., recipient_key_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., student_config_json: _Optional[str] = ..., student_weights: _Optional[_Iterable[_Union[RawArray, _Mapping]]] = ..., released_images: _Optional[_Union[RawArray, _Mapping]] = ..., reference_models: _Optional[int] = ..., lira: _Optional[bool] = ...) -> None: ...

class RelabelRequest(_message.Message):
    __slots__ = ("run_id", "site_id", "recipient_key_id", "nonce", "images", "temperature")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    site_id: str
    recipient_key_id: str
    nonce: bytes
    images: RawArray
    temperature: float
    def __init__(self, run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., recipient_key_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., images: _Optional[_Union[RawArray, _Mapping]] = ..., temperature: _Optional[float] = ...) -> None: ...

class RelabelReply(_message.Message):
    __slots__ = ("site_id", "run_id", "request_sha256", "probs")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    request_sha256: bytes
    probs: RawArray
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., request_sha256: _Optional[bytes] = ..., probs: _Optional[_Union[RawArray, _Mapping]] = ...) -> None: ...

class SiteRefusal(_message.Message):
    __slots__ = ("site_id", "run_id", "request", "reason", "setting")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SETTING_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    request: str
    reason: str
    setting: str
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., request: _Optional[str] = ..., reason: _Optional[str] = ..., setting: _Optional[str] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class ControlResult(_message.Message):
    __slots__ = ("auc", "auc_ci", "tpr_at_1pct_fpr", "num_a", "num_b")
    AUC_FIELD_NUMBER: _ClassVar[int]
    AUC_CI_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_1PCT_FPR_FIELD_NUMBER: _ClassVar[int]
    NUM_A_FIELD_NUMBER: _ClassVar[int]
    NUM_B_FIELD_NUMBER: _ClassVar[int]
    auc: float
    auc_ci: Interval
    tpr_at_1pct_fpr: float
    num_a: int
    num_b: int
    def __init__(self, auc: _Optional[float] = ..., auc_ci: _Optional[_Union[Interval, _Mapping]] = ..., tpr_at_1pct_fpr: _Optional[float] = ..., num_a: _Optional[int] = ..., num_b: _Optional[int] = ...) -> None: ...

class PerClassResult(_message.Message):
    __slots__ = ("class_name", "members", "nonmembers", "auc")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NONMEMBERS_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    members: int
    nonmembers: int
    auc: float
    def __init__(self, class_name: _Optional[str] = ..., members: _Optional[int] = ..., nonmembers: _Optional[int] = ..., auc: _Optional[float] = ...) -> None: ...

class AttackResult(_message.Message):
    __slots__ = ("attack", "target", "num_members", "num_nonmembers", "auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "tpr_at_01pct_fpr", "tpr_at_01pct_fpr_ci", "epsilon_lower_bound", "control", "roc_fpr", "roc_tpr", "histogram_edges", "histogram_members", "histogram_nonmembers", "per_class", "description", "histogram_score", "lowest_fpr", "tpr_at_lowest_fpr", "tpr_at_lowest_fpr_ci")
    ATTACK_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NUM_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NUM_NONMEMBERS_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    AUC_CI_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_1PCT_FPR_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_1PCT_FPR_CI_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_01PCT_FPR_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_01PCT_FPR_CI_FIELD_NUMBER: _ClassVar[int]
    EPSILON_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ROC_FPR_FIELD_NUMBER: _ClassVar[int]
    ROC_TPR_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_EDGES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_NONMEMBERS_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_SCORE_FIELD_NUMBER: _ClassVar[int]
    LOWEST_FPR_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_LOWEST_FPR_FIELD_NUMBER: _ClassVar[int]
    TPR_AT_LOWEST_FPR_CI_FIELD_NUMBER: _ClassVar[int]
    attack: str
    target: str
    num_members: int
    num_nonmembers: int
    auc: float
    auc_ci: Interval
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_ci: Interval
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_ci: Interval
    epsilon_lower_bound: float
    control: ControlResult
    roc_fpr: _containers.RepeatedScalarFieldContainer[float]
    roc_tpr: _containers.RepeatedScalarFieldContainer[float]
    histogram_edges: _containers.RepeatedScalarFieldContainer[float]
    histogram_members: _containers.RepeatedScalarFieldContainer[int]
    histogram_nonmembers: _containers.RepeatedScalarFieldContainer[int]
    per_class: _containers.RepeatedCompositeFieldContainer[PerClassResult]
    description: str
    histogram_score: str
    lowest_fpr: float
    tpr_at_lowest_fpr: float
    tpr_at_lowest_fpr_ci: Interval
    def __init__(self, attack: _Optional[str] = ..., target: _Optional[str] = ..., num_members: _Optional[int] = ..., num_nonmembers: _Optional[int] = ..., auc: _Optional[float] = ..., auc_ci: _Optional[_Union[Interval, _Mapping]] = ..., tpr_at_1pct_fpr: _Optional[float] = ..., tpr_at_1pct_fpr_ci: _Optional[_Union[Interval, _Mapping]] = ..., tpr_at_01pct_fpr: _Optional[float] = ..., tpr_at_01pct_fpr_ci: _Optional[_Union[Interval, _Mapping]] = ..., epsilon_lower_bound: _Optional[float] = ..., control: _Optional[_Union[ControlResult, _Mapping]] = ..., roc_fpr: _Optional[_Iterable[float]] = ..., roc_tpr: _Optional[_Iterable[float]] = ..., histogram_edges: _Optional[_Iterable[float]] = ..., histogram_members: _Optional[_Iterable[int]] = ..., histogram_nonmembers: _Optional[_Iterable[int]] = ..., per_class: _Optional[_Iterable[_Union[PerClassResult, _Mapping]]] = ..., description: _Optional[str] = ..., histogram_score: _Optional[str] = ..., lowest_fpr: _Optional[float] = ..., tpr_at_lowest_fpr: _Optional[float] = ..., tpr_at_lowest_fpr_ci: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...

class AuditReport(_message.Message):
    __slots__ = ("site_id", "run_id", "results", "num_members", "num_nonmembers", "candidate_sha256", "near_duplicates_json", "dp_json", "settings_json", "utility")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NUM_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NUM_NONMEMBERS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SHA256_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATES_JSON_FIELD_NUMBER: _ClassVar[int]
    DP_JSON_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    UTILITY_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    results: _containers.RepeatedCompositeFieldContainer[AttackResult]
    num_members: int
    num_nonmembers: int
    candidate_sha256: bytes
    near_duplicates_json: str
    dp_json: str
    settings_json: str
    utility: UtilityCounts
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[AttackResult, _Mapping]]] = ..., num_members: _Optional[int] = ..., num_nonmembers: _Optional[int] = ..., candidate_sha256: _Optional[bytes] = ..., near_duplicates_json: _Optional[str] = ..., dp_json: _Optional[str] = ..., settings_json: _Optional[str] = ..., utility: _Optional[_Union[UtilityCounts, _Mapping]] = ...) -> None: ...

class UtilityCounts(_message.Message):
    __slots__ = ("support", "student_correct", "teacher_correct", "comparator")
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    STUDENT_CORRECT_FIELD_NUMBER: _ClassVar[int]
    TEACHER_CORRECT_FIELD_NUMBER: _ClassVar[int]
    COMPARATOR_FIELD_NUMBER: _ClassVar[int]
    support: _containers.RepeatedScalarFieldContainer[int]
    student_correct: _containers.RepeatedScalarFieldContainer[int]
    teacher_correct: _containers.RepeatedScalarFieldContainer[int]
    comparator: str
    def __init__(self, support: _Optional[_Iterable[int]] = ..., student_correct: _Optional[_Iterable[int]] = ..., teacher_correct: _Optional[_Iterable[int]] = ..., comparator: _Optional[str] = ...) -> None: ...
