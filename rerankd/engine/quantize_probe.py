"""The probe set int8 and bf16 are checked on at export, built to look like real traffic.

Two parts, both deterministic:

- `NATURAL`: handwritten queries, each with relevant, near-miss and unrelated passages, in
  English with German, French, Spanish and Chinese (written for this project).
- `traffic(seed)`: generated groups that carry what made the old, natural-only probe friendlier
  than real traffic (it passed at Spearman 0.99 where held-out text gave 0.970): retrieved
  lists whose passages are *all* somewhat relevant (graded term overlap, so fp32 scores sit
  close together and small int8 errors swap them), very short and very long passages (past
  `max_length`, truncated), near-duplicates (one word changed), exact duplicates (ties), and
  six languages, Chinese and Japanese among them, with cross-lingual passages.

`probe_set()` is what export checks; `held_out_set()` draws the same kinds of groups from
another seed and other queries, so a figure on it is a figure on text the probe never saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

Group = tuple[str, tuple[str, ...]]  # a query and the passages retrieved for it

PROBE_SEED = 20241
HELD_OUT_SEED = 777
PROBE_GROUPS = 36  # generated groups in the probe, besides the natural ones
PASSAGES_PER_GROUP = 12

NATURAL: tuple[Group, ...] = (
    (
        "how do I rotate an API key without downtime",
        (
            "Create the new key first, deploy it next to the old one, switch clients over, "
            "then revoke the old key once no request uses it.",
            "API keys identify the calling project and are sent in a request header.",
            "Rotating tyres every ten thousand kilometres makes them wear evenly.",
            "To avoid downtime, keep both keys valid during the rollout window and watch the "
            "error rate of each before removing the old one.",
            "Our office will be closed on public holidays.",
            "Revoking a key takes effect within a minute in every region.",
        ),
    ),
    (
        "symptoms of vitamin D deficiency",
        (
            "Low vitamin D can cause tiredness, bone pain, muscle weakness and low mood.",
            "Vitamin C is found in citrus fruit, peppers and broccoli.",
            "In children a lack of vitamin D may lead to rickets, with soft and bent bones.",
            "The deficiency is common in winter at northern latitudes, where sunlight is weak.",
            "The museum opens at nine and closes at five.",
            "Blood tests measure 25-hydroxy vitamin D to diagnose a deficiency.",
        ),
    ),
    (
        "best way to cache database query results",
        (
            "Put a read-through cache in front of the database and key entries by the query "
            "and its parameters; expire them when the underlying rows change.",
            "A composite index speeds up queries that filter on several columns.",
            "Caching results for a short time-to-live trades freshness for lower load.",
            "The orchestra played three symphonies on Saturday night.",
            "Redis and Memcached are common stores for cached query results.",
            "Databases write changes to a log before applying them to data files.",
        ),
    ),
    (
        "Wie lange dauert ein Flug von Berlin nach Madrid?",
        (
            "Ein Direktflug von Berlin nach Madrid dauert etwa drei Stunden.",
            "Madrid ist die Hauptstadt Spaniens und liegt im Zentrum des Landes.",
            "Der Zug von Berlin nach Hamburg braucht knapp zwei Stunden.",
            "Mit Umstieg in Frankfurt kann die Reise nach Madrid fünf Stunden dauern.",
            "Berliner Museen sind montags oft geschlossen.",
            "Flights from Berlin to Madrid take roughly three hours non-stop.",
        ),
    ),
    (
        "quelle est la capitale de l'Australie",
        (
            "Canberra est la capitale de l'Australie depuis 1913.",
            "Sydney est la plus grande ville d'Australie, mais pas sa capitale.",
            "La Nouvelle-Zélande a pour capitale Wellington.",
            "Le kangourou est un marsupial que l'on trouve en Australie.",
            "Les croissants se mangent souvent au petit déjeuner.",
            "Canberra was chosen as a compromise between Sydney and Melbourne.",
        ),
    ),
    (
        "¿cómo se prepara una tortilla de patatas?",
        (
            "Se fríen las patatas en aceite de oliva, se mezclan con huevo batido y se cuaja "
            "la tortilla por ambos lados en la sartén.",
            "La paella es un plato de arroz típico de Valencia.",
            "Algunas personas añaden cebolla a la tortilla de patatas.",
            "El tren de alta velocidad une Madrid y Sevilla.",
            "Para darle la vuelta se usa un plato del tamaño de la sartén.",
            "The Spanish omelette is made with potatoes, eggs and olive oil.",
        ),
    ),
    (
        "如何提高模型推理速度",
        (
            "可以使用量化、批处理和更快的推理引擎来提高模型推理速度。",
            "模型训练需要大量的数据和计算资源。",
            "按长度排序后再分批，可以减少填充带来的浪费。",
            "今天北京的天气晴朗，气温二十度。",
            "把模型导出为 ONNX 格式后，可以用 ONNX Runtime 在 CPU 上更快地运行。",
            "这家餐厅的饺子非常好吃。",
        ),
    ),
    (
        "what causes inflation",
        (
            "Inflation rises when demand outpaces what the economy can supply, or when costs "
            "such as energy and wages go up and are passed on in prices.",
            "Central banks raise interest rates to bring inflation down.",
            "The printing press was invented in the fifteenth century.",
            "Deflation is a sustained fall in the general price level.",
            "A weaker currency makes imports dearer and can push prices up.",
            "Hiking boots should be broken in before a long trip.",
        ),
    ),
    (
        "python read a large csv file in chunks",
        (
            "pandas.read_csv accepts a chunksize argument and then returns an iterator of "
            "data frames, so the whole file never sits in memory.",
            "The csv module's reader yields one row at a time, which keeps memory flat.",
            "Python lists grow automatically as items are appended.",
            "Pythons are non-venomous snakes found in Africa, Asia and Australia.",
            "Compressing the file with gzip saves disk space; pandas reads it directly.",
            "Spreadsheets show data in rows and columns.",
        ),
    ),
    (
        "signs a houseplant is overwatered",
        (
            "Yellowing lower leaves, soggy soil and a musty smell are signs of overwatering.",
            "Root rot turns roots brown and mushy when the soil stays wet for too long.",
            "Most houseplants prefer bright, indirect light.",
            "The stock market closed higher on Friday.",
            "Let the top few centimetres of soil dry out before watering again.",
            "Underwatered plants have dry, crispy leaf edges and wilt.",
        ),
    ),
    (
        "kubernetes pod stuck in pending",
        (
            "A pod stays Pending when no node has enough CPU or memory for its requests, or "
            "when its node selector or taints match no node.",
            "kubectl describe pod shows the scheduler's events explaining why it cannot place "
            "the pod.",
            "A Deployment keeps the requested number of pod replicas running.",
            "Whales communicate with songs that travel for kilometres.",
            "An unbound PersistentVolumeClaim also keeps a pod Pending.",
            "Containers share the host's kernel.",
        ),
    ),
    (
        "历史上第一次登月是什么时候",
        (
            "1969年7月20日，阿波罗11号的宇航员首次登上月球。",
            "月球是地球唯一的天然卫星。",
            "尼尔·阿姆斯特朗是第一个踏上月球的人。",
            "长城是中国古代的军事防御工程。",
            "The first crewed Moon landing was Apollo 11 in July 1969.",
            "火星上有太阳系最高的火山。",
        ),
    ),
)

# Generated groups ---------------------------------------------------------------------------

_WORDS: dict[str, tuple[str, ...]] = {
    "en": tuple(
        """account backup balance batch billing budget cache certificate cluster compiler
        contract credit database deadline deployment disk engine error export failure firmware
        forecast freight gateway harvest index inflation invoice kernel latency ledger license
        migration monitor mortgage network patient payment pipeline policy queue region release
        revenue schedule schema sensor server storage tariff tenant ticket token traffic vendor
        weather wheat""".split()
    ),
    "de": tuple(
        """Abrechnung Anfrage Bahnhof Bericht Datenbank Dienst Drucker Fehler Flughafen Gebühr
        Gesetz Handel Haushalt Heizung Kunde Lager Leitung Miete Netzwerk Pflege Preis Rechnung
        Schule Server Sicherung Speicher Steuer Strom Termin Vertrag Verwaltung Wetter Zahlung
        Zinsen Zug Zulassung Bauantrag Krankenhaus Versicherung Lieferung""".split()
    ),
    "fr": tuple(
        """abonnement banque billet budget client commande contrat courrier dossier douane
        école électricité emprunt entrepôt facture fichier impôt livraison logement loyer
        marché médecin mutuelle panne paiement permis réseau retraite salaire sauvegarde
        serveur sinistre stock taux train voyage""".split()
    ),
    "es": tuple(
        """alquiler banco cita cliente contrato cosecha crédito cuenta datos deuda empresa
        envío escuela factura fallo hipoteca impuesto informe inventario licencia mercado
        nómina pago pedido póliza precio red reserva respaldo salud seguro servidor tarifa
        tren vuelo""".split()
    ),
    "zh": tuple(
        """数据 模型 系统 服务 用户 市场 城市 政府 公司 经济 技术 网络 信息 管理 价格 投资 银行
        学生 医院 能源 交通 天气 农业 合同 客户 物流 仓库 港口 铁路 航班 机场 酒店 软件 芯片
        电池 程序 代码 服务器 集群 缓存 延迟 查询 文档 索引 算法 训练 推理 日志 监控 预算 税收
        贷款 利率 保险 风险""".split()
    ),
    "ja": tuple(
        """データ モデル システム サービス 利用者 市場 会社 経済 技術 情報 管理 価格 投資
        銀行 学生 病院 交通 天気 契約 顧客 物流 倉庫 空港 鉄道 ホテル ソフト 電池 請求 予算
        税金 保険 障害 証明書 認証 更新 設定 検索 索引 応答 遅延 保存 削除 権限 手続き""".split()
    ),
}
_GLUE: dict[str, tuple[str, ...]] = {
    "en": tuple("the a of to and in for with on is was are this that from by".split()),
    "de": tuple("der die das und mit für von ist wird nicht auf im zu bei".split()),
    "fr": tuple("le la les de des et pour avec dans est sur une un du par".split()),
    "es": tuple("el la los de del y para con en es por una un que se".split()),
    "zh": tuple("的 了 在 是 和 与 对 将 也 都 中 为".split()),
    "ja": tuple("の は が を に で と も から まで です ます".split()),
}
_SPACED = ("en", "de", "fr", "es")
_STOP = {"zh": "。", "ja": "。"}


@dataclass(frozen=True)
class _Draw:
    """One group's language and the query's terms."""

    language: str
    terms: tuple[str, ...]


def traffic(seed: int, groups: int) -> tuple[Group, ...]:
    """`groups` generated groups; the same seed gives the same text everywhere."""
    rng = random.Random(seed)
    return tuple(_group(rng) for _ in range(groups))


def probe_set() -> tuple[Group, ...]:
    """What the export probes: the natural groups, then the generated ones."""
    return NATURAL + traffic(PROBE_SEED, PROBE_GROUPS)


def held_out_set(groups: int = PROBE_GROUPS) -> tuple[Group, ...]:
    """Groups of the same kinds the probe never contains: for measuring, not for deciding."""
    probe_queries = {query for query, _ in probe_set()}
    return tuple(g for g in traffic(HELD_OUT_SEED, groups) if g[0] not in probe_queries)


def composition(groups: tuple[Group, ...]) -> dict[str, int]:
    """Counts of what a set holds (pairs, CJK, short, long, duplicates): shown and tested."""
    passages = [p for _, ps in groups for p in ps]
    per_group_duplicates = sum(len(ps) - len(set(ps)) for _, ps in groups)
    return {
        "groups": len(groups),
        "pairs": len(passages),
        "cjk_pairs": sum(1 for p in passages if _is_cjk(p)),
        "short": sum(1 for p in passages if _length(p) <= 12),
        "long": sum(1 for p in passages if _length(p) >= 250),
        "exact_duplicates": per_group_duplicates,
        "languages": len({_language_of(q) for q, _ in groups}),
    }


def _group(rng: random.Random) -> Group:
    language = rng.choice(tuple(_WORDS))
    draw = _Draw(language, tuple(rng.sample(_WORDS[language], rng.randint(2, 5))))
    passages = list(_passages(rng, draw))
    rng.shuffle(passages)
    return _join(list(draw.terms), language), tuple(passages)


def _passages(rng: random.Random, draw: _Draw) -> Iterator[str]:
    """Twelve passages as a retriever returns them: mostly on topic, in graded degrees."""
    language = draw.language
    graded = [
        _passage(rng, language, rng.randint(20, 80), draw.terms, share)
        for share in (0.0, 0.04, 0.08, 0.12, 0.2, 0.3)
    ]
    yield from graded
    yield _passage(rng, language, rng.randint(3, 10), draw.terms, 0.3)  # short, on topic
    yield _passage(rng, language, rng.randint(3, 10), (), 0.0)  # short, off topic
    yield _passage(rng, language, rng.randint(260, 420), draw.terms, 0.06)  # past max_length
    yield _near_duplicate(rng, graded[4], language)  # one word changed
    yield graded[3]  # an exact duplicate: fp32 ties it with its twin
    other = rng.choice([name for name in _WORDS if name != language])
    yield _passage(rng, other, rng.randint(20, 60), (), 0.0)  # another language


def _passage(
    rng: random.Random, language: str, words: int, terms: tuple[str, ...], share: float
) -> str:
    sentences: list[str] = []
    left = words
    while left > 0:
        length = min(left, rng.randint(5, 14))
        sentence = [
            rng.choice(terms)
            if terms and rng.random() < share
            else rng.choice(_GLUE[language] if rng.random() < 0.35 else _WORDS[language])
            for _ in range(length)
        ]
        sentences.append(_sentence(sentence, language))
        left -= length
    return ("" if language not in _SPACED else " ").join(sentences)


def _near_duplicate(rng: random.Random, text: str, language: str) -> str:
    """`text` with one word (in CJK, one character) swapped for another word of its language."""
    if language in _SPACED:
        words = text.split(" ")
        at = rng.randrange(len(words))
        words[at] = rng.choice([w for w in _WORDS[language] if w != words[at].strip(".")])
        return " ".join(words)
    at = rng.randrange(len(text))
    return (
        text[:at] + rng.choice([w for w in _WORDS[language] if w[0] != text[at]]) + text[at + 1 :]
    )


def _sentence(words: list[str], language: str) -> str:
    if language not in _SPACED:
        return "".join(words) + _STOP[language]
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _join(words: list[str], language: str) -> str:
    return " ".join(words) if language in _SPACED else "".join(words)


def _is_cjk(text: str) -> bool:
    return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)


def _length(text: str) -> int:
    """Words, counting each CJK character as half a word (about a token each)."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    return len(text.split()) - (1 if cjk and " " not in text.strip() else 0) + cjk // 2


def _language_of(text: str) -> str:
    if any("\u3040" <= ch <= "\u30ff" for ch in text):
        return "ja"
    if _is_cjk(text):
        return "zh"
    for language in ("de", "fr", "es"):
        if any(word in _WORDS[language] for word in text.split()):
            return language
    return "en"


PROBE = probe_set()
