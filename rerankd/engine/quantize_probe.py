"""The fixed probe set int8 is checked on at export: queries, each with passages of mixed relevance.

Written for this project (not taken from a dataset). Relevant, near-miss and unrelated passages
of different lengths, in English with some German, French, Spanish and Chinese, so that a
ranking model's scores spread out and rank changes caused by quantization show.
"""

from __future__ import annotations

PROBE: tuple[tuple[str, tuple[str, ...]], ...] = (
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
