"""A deterministic, RAG-shaped workload: one query plus N retrieved passages per request.

Passage lengths are uniform over 20-400 words, so a request padded to its longest passage
carries about 1.8x its real tokens -- the waste that length-sorted batching removes. About a
third of the text is Chinese (a "word" is one two- or three-character word, no spaces), the
rest English. A few passages per request reuse the query's terms, as retrieved ones would.
Everything comes from one seed, so every system in a run scores exactly the same pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ENGLISH = """
account action address agent algorithm analysis answer api application archive area array
article attention audit author backup balance bandwidth bank batch benchmark bias billing
block board body bond border branch bridge browser budget buffer bug build bundle cache
calendar camera capacity capital carbon card cargo carrier catalog cell center certificate
chain channel chapter charge chart chip circuit citizen city claim class client climate
cloud cluster code column command comment company compiler component compute concept
config connection consumer container content contract control cost country court credit
crop culture currency customer cycle damage data database deadline debt decision
default delivery demand deployment design device diagram disk distance document domain
driver economy edge editor election element email employee encoder energy engine entry
error estimate event evidence exchange export factor failure farm feature fee field file
filter finance firmware flight flow forecast format framework freight function fund gateway
gene graph grid growth guide hardware harvest health heap history host hospital hotel index
industry inflation input insurance interest interface inventory invoice issue job journal
kernel key label language latency layer lease ledger library license limit link loan log
machine manual map market memory merchant message method metric migration model module
monitor mortgage network node number object office order output owner package page
parameter partner patch patient payment peak permit pipeline plan platform policy pool port
portfolio power price printer process product profile program protocol provider query queue
rain rate record region release report request research resource response result retail
revenue review risk road route rule runtime salary sample scale schedule schema score
search season sector security sensor server service session share signal site soil source
speed stack standard station storage store stream street student supply support system
table tariff task tax team template tenant test thread ticket token tool trade traffic
train transaction transfer travel trial tunnel update upload user value vector vendor
version vessel video volume warehouse water weather window worker workload year zone
""".split()

_ENGLISH_GLUE = """
the the the a a of of of to to and and in in is is for on with that by as at from this
are be it was an or which not has have can will may more most also its their after before
""".split()

_CHINESE = """
数据 模型 系统 服务 用户 市场 城市 政府 公司 经济 技术 网络 信息 管理 发展 问题 研究 方法
结果 时间 地区 国家 企业 产品 价格 投资 银行 学生 学校 医院 健康 环境 能源 交通 天气 农业
工业 文化 历史 科学 教育 安全 政策 法律 合同 客户 需求 供应 物流 仓库 货物 运输 港口 铁路
航班 机场 旅游 酒店 餐厅 电影 音乐 体育 比赛 球队 新闻 报告 文章 作者 图书 语言 翻译 软件
硬件 芯片 电脑 手机 相机 电池 屏幕 程序 代码 数据库 服务器 集群 容器 节点 队列 缓存 延迟
吞吐量 查询 文档 排序 检索 向量 搜索 索引 算法 训练 推理 参数 模块 接口 版本 发布 测试
错误 日志 监控 指标 成本 预算 收入 利润 税收 贷款 利率 通胀 汇率 股票 基金 保险 风险 资产
负债 会计 审计 员工 团队 项目 计划 目标 策略 会议 决定 变化 增长 下降 提高 降低 影响 支持
提供 使用 需要 包括 进行 实现 完成 开始 结束 重要 主要 不同 相关 新的 大量 已经 可以 我们
""".split()

_CHINESE_GLUE = "的 的 的 了 在 是 和 与 对 将 也 都 中 为".split()


@dataclass(frozen=True)
class Request:
    """One rerank request: the query and the passages a retriever returned for it."""

    query: str
    documents: list[str]

    def pairs(self) -> list[tuple[str, str]]:
        return [(self.query, d) for d in self.documents]


@dataclass(frozen=True)
class WorkloadSpec:
    """The knobs of the workload; the defaults are the benchmark's."""

    documents: int = 32
    min_words: int = 20
    max_words: int = 400
    chinese_share: float = 0.3
    relevant_share: float = 0.25
    seed: int = 0


def make_requests(count: int, spec: WorkloadSpec | None = None) -> list[Request]:
    """`count` requests, identical for the same spec on every machine and Python version."""
    spec = spec or WorkloadSpec()
    rng = random.Random(spec.seed)
    return [_request(rng, spec) for _ in range(count)]


def _request(rng: random.Random, spec: WorkloadSpec) -> Request:
    chinese_query = rng.random() < spec.chinese_share
    vocabulary = _CHINESE if chinese_query else _ENGLISH
    terms = rng.sample(vocabulary, rng.randint(3, 7))
    query = _join(terms, chinese_query) + ("？" if chinese_query else "?")
    documents = []
    for _ in range(spec.documents):
        chinese = rng.random() < spec.chinese_share
        words = rng.randint(spec.min_words, spec.max_words)
        shared = terms if rng.random() < spec.relevant_share and chinese == chinese_query else []
        documents.append(_passage(rng, words, chinese, shared))
    return Request(query, documents)


def _passage(rng: random.Random, words: int, chinese: bool, shared: list[str]) -> str:
    """`words` words in sentences of 6-18 words; `shared` terms are sprinkled in."""
    content, glue = (_CHINESE, _CHINESE_GLUE) if chinese else (_ENGLISH, _ENGLISH_GLUE)
    sentences: list[str] = []
    left = words
    while left > 0:
        length = min(left, rng.randint(6, 18))
        sentence = [
            rng.choice(shared)
            if shared and rng.random() < 0.15
            else rng.choice(glue if rng.random() < 0.35 else content)
            for _ in range(length)
        ]
        sentences.append(_sentence(sentence, chinese))
        left -= length
    return ("" if chinese else " ").join(sentences)


def _sentence(words: list[str], chinese: bool) -> str:
    if chinese:
        return "".join(words) + "。"
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _join(words: list[str], chinese: bool) -> str:
    return "".join(words) if chinese else " ".join(words)
