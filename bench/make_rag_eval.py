"""Generate the RAG QA sets for `aigrid eval-compression`: extproc/tools/evalcompress/data/rag_eval.jsonl (easy) and
rag_eval_hard.jsonl (hard: paraphrase, distractor, version, bridge; see the section below).

Reproducible (seeded): `python bench/make_rag_eval.py [--seed 7] [--per-lang 60] [--hard-seed 13] [--per-kind 30]`.

The easy set:

Each item is one question over 6-10 documents: the gold passage (which holds the answer), hard negatives
(same domain and template family, different entities and numbers: the answer's neighbours, e.g. ticket
INC-4822 when the question is about INC-4821), and unrelated documents from other domains. Answers are
numbers, names and identifiers, the tokens a compressor most easily damages. English and Japanese, with
their own templates (not translations), names, places and counters. Prompt formats vary across items:
"Document [i]:" markers, <document> tags, 【文書i】 headers, and one message per document.

Fields: id, lang, domain, format, documents[list[str]], question, answer, answer_type, gold (index).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "extproc" / "compression" / "data" / "rag_eval.jsonl"

# ---- shared pools -------------------------------------------------------------------------------------------
EN_FIRST = ["Maria", "Daniel", "Aisha", "Tomasz", "Priya", "Lucas", "Hannah", "Kofi", "Elena", "Marcus",
            "Sofia", "Rahul", "Ingrid", "Mateo", "Grace", "Yusuf", "Chloe", "Viktor", "Amara", "Oliver"]
EN_LAST = ["Lopez", "Park", "Okafor", "Nowak", "Raman", "Ferreira", "Schmidt", "Mensah", "Petrova",
           "Whitfield", "Castillo", "Iyer", "Lindqvist", "Duarte", "Osei", "Demir", "Moreau", "Kowal",
           "Adeyemi", "Brennan"]
EN_CITIES = ["Rotterdam", "Valparaiso", "Gdansk", "Busan", "Antwerp", "Durban", "Halifax", "Tacoma",
             "Marseille", "Mombasa", "Genoa", "Santos"]
EN_COMPANIES = ["Northwind Analytics", "Corvid Systems", "Bluefin Energy", "Harbor & Vale", "Quillstone Labs",
                "Meridian Foods", "Tessellate AI", "Ironbark Mining", "Lumen Freight", "Solace Health"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
JA_LAST = ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤", "吉田", "山口",
           "松本", "井上", "木村", "清水"]
JA_FIRST = ["健一", "美咲", "大輔", "陽子", "翔太", "真理子", "拓也", "さくら", "直樹", "由美", "誠",
            "あかり", "浩二", "恵", "隆", "千尋"]
JA_CITIES = ["札幌", "仙台", "金沢", "名古屋", "神戸", "広島", "高松", "福岡", "熊本", "那覇", "新潟", "静岡"]
JA_COMPANIES = ["北斗データ", "青葉精機", "瀬戸内フーズ", "みなと物流", "朝日ソフト", "富士見電機",
                "桜川製薬", "東雲エナジー", "白山テクノ", "若葉ネットワーク"]


def en_name(r: random.Random) -> str:
    return f"{r.choice(EN_FIRST)} {r.choice(EN_LAST)}"


def ja_name(r: random.Random) -> str:
    return f"{r.choice(JA_LAST)}{r.choice(JA_FIRST)}"


def en_date(r: random.Random) -> str:
    return f"{r.choice(MONTHS)} {r.randint(1, 28)}, {r.randint(2019, 2026)}"


def ja_date(r: random.Random) -> str:
    return f"{r.randint(2019, 2026)}年{r.randint(1, 12)}月{r.randint(1, 28)}日"


def fill(r: random.Random, pool: list[str], n: int) -> list[str]:
    return r.sample(pool, k=min(n, len(pool)))


# ---- English domains ----------------------------------------------------------------------------------------
# Each domain: make(r) -> dict of entity fields; doc(r, e) -> document text; qa list of (question, answer key,
# answer_type). Hard negatives are doc(r, make(r)) with the family fields (e.g. ticket prefix) shared.
EN_FILLER = {
    "incident": [
        "The on-call rotation was notified through the paging system within two minutes of the first alert.",
        "Customer-facing dashboards showed elevated error rates while the investigation was under way.",
        "A follow-up review scheduled for the next week will look at alert thresholds and runbook gaps.",
        "No customer data was lost, although several batch jobs had to be re-run after the service recovered.",
        "The team added a synthetic check so that the same failure would page someone earlier next time.",
        "Status page updates were posted every fifteen minutes until the incident was closed.",
        "Engineers first suspected a network partition, but packet captures ruled that out.",
    ],
    "product": [
        "The enclosure is fanless, which makes the unit suitable for quiet offices and retail counters.",
        "Configuration is done through a web console or a REST API, and settings can be exported as a file.",
        "The vendor offers a three-year warranty with advance replacement in most regions.",
        "Reviewers praised the setup process but noted that the documentation lags behind the firmware.",
        "Power over Ethernet is supported on the lower ports, up to a shared budget per chassis.",
        "The device can be mounted on a wall, in a rack with an optional kit, or placed on a desk.",
    ],
    "finance": [
        "Analysts had expected slightly weaker results because of currency headwinds in the second half.",
        "The board approved a share buyback programme and left the dividend unchanged.",
        "Operating margin improved as the company closed two underperforming distribution centres.",
        "Management reiterated its full-year guidance during the call with investors.",
        "Capital expenditure rose as the company invested in automation at its largest plants.",
        "The results were published after the market closed, and the shares moved little in late trading.",
    ],
    "shipping": [
        "The voyage was planned to avoid a storm system forecast over the northern route.",
        "Port congestion added about a day of waiting at anchor before the berth was free.",
        "Refrigerated containers were monitored remotely for temperature throughout the crossing.",
        "Customs pre-clearance was completed electronically before the vessel arrived.",
        "The freight forwarder confirmed that the bill of lading was issued the same afternoon.",
        "Fuel consumption was lower than usual thanks to slow steaming on the long leg.",
    ],
    "release": [
        "Upgrading is recommended for all users; the release is backwards compatible with the previous minor.",
        "Binary packages are available for Linux, macOS and Windows on the usual download page.",
        "The changelog also lists several documentation fixes and a refreshed contributor guide.",
        "Maintainers thanked the external researchers who reported the issue through the security policy.",
        "Deprecated configuration keys still work but now print a warning at start-up.",
        "Continuous integration now runs the test suite on two additional architectures.",
    ],
    "trial": [
        "Participants were randomised in equal proportions and followed up for twelve months.",
        "The primary endpoint was the change from baseline in a standard symptom score.",
        "Adverse events were mostly mild and resolved without intervention.",
        "An independent data monitoring committee reviewed unblinded results at the interim analysis.",
        "Recruitment took place at hospitals in several countries over a period of two years.",
        "The sponsor plans to publish the full results in a peer-reviewed journal.",
    ],
    "rail": [
        "Passengers are advised to arrive at the station at least ten minutes before departure.",
        "Seat reservations are mandatory on this service during the summer timetable.",
        "A dining car operates between the first and the last major stops of the journey.",
        "Bicycles can be carried in a dedicated compartment if booked in advance.",
        "Engineering works may cause short delays on weekends until the end of the season.",
        "Tickets bought online can be shown on a phone to the conductor.",
    ],
    "lab": [
        "The group publishes most of its code and data sets under open licences.",
        "Funding comes from a mix of national research grants and industry partnerships.",
        "Doctoral students spend part of their programme at partner institutions abroad.",
        "The lab hosts a public seminar series that is streamed online every month.",
        "Its early work focused on theory before moving towards large experimental studies.",
        "Several spin-off companies have been founded by former members of the group.",
    ],
}


def en_domains() -> dict[str, tuple[Callable, Callable, list[tuple[str, str, str]]]]:
    def incident(r: random.Random, base: dict | None = None) -> dict:
        num = (base["num"] + r.choice([1, 2, -1, 7, 11])) if base else r.randint(1000, 9899)
        return {"id": f"INC-{num}", "num": num, "who": en_name(r), "date": en_date(r),
                "svc": r.choice(["billing", "search", "checkout", "login", "inventory", "notification"]),
                "code": r.choice(["503", "502", "504", "500", "429"]), "mins": r.randint(7, 180),
                "cause": r.choice(["an expired TLS certificate", "a misconfigured load balancer",
                                    "a full disk on the primary database", "a bad feature flag rollout",
                                    "a DNS record that pointed at a retired host"])}

    def incident_doc(r: random.Random, e: dict) -> str:
        head = r.choice([
            f"Ticket {e['id']} was opened on {e['date']} by {e['who']} after the {e['svc']} service returned "
            f"HTTP {e['code']} errors for about {e['mins']} minutes.",
            f"On {e['date']}, {e['who']} filed {e['id']}: the {e['svc']} service answered HTTP {e['code']} "
            f"for roughly {e['mins']} minutes.",
        ])
        cause = f"The root cause of {e['id']} was {e['cause']}."
        return " ".join([head, *fill(r, EN_FILLER["incident"], 3), cause, *fill(r, EN_FILLER["incident"], 2)])

    def product(r: random.Random, base: dict | None = None) -> dict:
        brand = base["brand"] if base else r.choice(["Kestrel", "Marlin", "Osprey", "Heron", "Falcon"])
        series = r.choice(["RX", "GX", "TX", "MX"])
        return {"brand": brand, "code": f"{series}-{r.randint(100, 990)}", "ports": r.choice([4, 8, 12, 16, 24, 48]),
                "weight": f"{r.randint(8, 60) / 10:.1f}", "fw": f"{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
                "price": r.randint(89, 1490)}

    def product_doc(r: random.Random, e: dict) -> str:
        head = (f"The {e['brand']} {e['code']} router ships with {e['ports']} Ethernet ports and weighs "
                f"{e['weight']} kg. It runs firmware version {e['fw']} out of the box.")
        price = f"At launch the {e['code']} was listed at ${e['price']}."
        return " ".join([head, *fill(r, EN_FILLER["product"], 3), price, *fill(r, EN_FILLER["product"], 2)])

    def finance(r: random.Random, base: dict | None = None) -> dict:
        return {"co": base["co"] if base else r.choice(EN_COMPANIES), "q": r.randint(1, 4), "year": r.randint(2020, 2026),
                "rev": f"{r.randint(120, 990)}.{r.randint(1, 9)}", "cfo": en_name(r), "staff": r.randint(900, 24000)}

    def finance_doc(r: random.Random, e: dict) -> str:
        head = (f"{e['co']} reported revenue of ${e['rev']} million for Q{e['q']} {e['year']}, "
                f"the company said in its quarterly filing.")
        cfo = f"Chief financial officer {e['cfo']} presented the figures; the company employed {e['staff']} people at quarter end."
        return " ".join([head, *fill(r, EN_FILLER["finance"], 2), cfo, *fill(r, EN_FILLER["finance"], 3)])

    def shipping(r: random.Random, base: dict | None = None) -> dict:
        return {"id": f"SHP-{r.randint(10000, 99999)}", "port": r.choice(EN_CITIES), "date": en_date(r),
                "ship": "MV " + r.choice(["Northern Star", "Blue Horizon", "Cape Aurora", "Silver Tern",
                                           "Ocean Lark", "Pacific Wren", "Atlas Dawn", "Coral Spirit"]),
                "teu": r.randint(40, 2400), "dest": r.choice(EN_CITIES)}

    def shipping_doc(r: random.Random, e: dict) -> str:
        head = (f"Shipment {e['id']} left {e['port']} on {e['date']} aboard the {e['ship']}, carrying "
                f"{e['teu']} containers bound for {e['dest']}.")
        return " ".join([head, *fill(r, EN_FILLER["shipping"], 5)])

    def release(r: random.Random, base: dict | None = None) -> dict:
        proj = base["proj"] if base else r.choice(["libquartz", "tidewater", "pgsentry", "nimbusctl", "arrowhead-db"])
        return {"proj": proj, "ver": f"{r.randint(1, 6)}.{r.randint(0, 30)}.{r.randint(0, 12)}",
                "cve": f"CVE-{r.randint(2021, 2026)}-{r.randint(10000, 49999)}", "date": en_date(r),
                "rm": en_name(r)}

    def release_doc(r: random.Random, e: dict) -> str:
        head = (f"{e['proj']} {e['ver']} was published on {e['date']} and fixes {e['cve']}, a flaw in request parsing. "
                f"The release manager was {e['rm']}.")
        return " ".join([head, *fill(r, EN_FILLER["release"], 5)])

    def trial(r: random.Random, base: dict | None = None) -> dict:
        return {"id": f"NCT0{r.randint(1000000, 9999999)}", "n": r.randint(60, 4200), "pi": en_name(r),
                "drug": r.choice(["velorastat", "quintamab", "dorexiline", "semavotide", "pelucitinib"]),
                "city": r.choice(EN_CITIES)}

    def trial_doc(r: random.Random, e: dict) -> str:
        head = (f"Trial {e['id']} enrolled {e['n']} patients to test {e['drug']}. The principal investigator, "
                f"{e['pi']}, is based in {e['city']}.")
        return " ".join([head, *fill(r, EN_FILLER["trial"], 5)])

    def rail(r: random.Random, base: dict | None = None) -> dict:
        name = base["name"] if base else r.choice(["Coastal Express", "Alpine Arrow", "Lakeshore Limited", "Night Heron"])
        return {"name": name, "no": r.randint(100, 989), "city": r.choice(EN_CITIES),
                "time": f"{r.randint(5, 22):02d}:{r.choice(['05', '15', '20', '35', '40', '55'])}",
                "platform": r.randint(1, 14), "cars": r.randint(5, 14)}

    def rail_doc(r: random.Random, e: dict) -> str:
        head = (f"The {e['name']} No. {e['no']} departs {e['city']} at {e['time']} from platform {e['platform']} "
                f"and runs with {e['cars']} cars.")
        return " ".join([head, *fill(r, EN_FILLER["rail"], 5)])

    def lab(r: random.Random, base: dict | None = None) -> dict:
        return {"lab": r.choice(["Helix Robotics Lab", "Saltmarsh Ecology Group", "Quantum Materials Centre",
                                  "Applied Acoustics Lab", "Computational Linguistics Unit", "Glacier Dynamics Group"]),
                "year": r.randint(1968, 2022), "head": en_name(r), "members": r.randint(8, 140)}

    def lab_doc(r: random.Random, e: dict) -> str:
        head = (f"The {e['lab']} was founded in {e['year']} and is led today by {e['head']}. "
                f"It has {e['members']} members.")
        return " ".join([head, *fill(r, EN_FILLER["lab"], 5)])

    return {
        "incident": (incident, incident_doc, [("Who opened ticket {id}?", "who", "name"),
                                               ("For about how many minutes did the outage in {id} last?", "mins", "number")]),
        "product": (product, product_doc, [("Which firmware version does the {brand} {code} run out of the box?", "fw", "identifier"),
                                           ("How many Ethernet ports does the {brand} {code} have?", "ports", "number")]),
        "finance": (finance, finance_doc, [("What revenue did {co} report for Q{q} {year}, in millions of dollars?", "rev", "number"),
                                           ("Who is the chief financial officer who presented {co}'s Q{q} {year} results?", "cfo", "name")]),
        "shipping": (shipping, shipping_doc, [("Which vessel carried shipment {id}?", "ship", "name"),
                                              ("How many containers did shipment {id} carry?", "teu", "number")]),
        "release": (release, release_doc, [("Which CVE is fixed by {proj} {ver}?", "cve", "identifier"),
                                           ("Who was the release manager of {proj} {ver}?", "rm", "name")]),
        "trial": (trial, trial_doc, [("How many patients did trial {id} enroll?", "n", "number"),
                                     ("Who is the principal investigator of trial {id}?", "pi", "name")]),
        "rail": (rail, rail_doc, [("From which platform does the {name} No. {no} depart?", "platform", "number"),
                                  ("At what time does the {name} No. {no} leave {city}?", "time", "identifier")]),
        "lab": (lab, lab_doc, [("In what year was the {lab} founded?", "year", "number"),
                               ("Who leads the {lab}?", "head", "name")]),
    }


# ---- Japanese domains ---------------------------------------------------------------------------------------
JA_FILLER = {
    "incident": [
        "最初のアラートから二分以内に当番のエンジニアへ通知が届きました。",
        "調査の間、顧客向けのダッシュボードではエラー率の上昇が表示されていました。",
        "翌週の振り返り会議では、アラートのしきい値と手順書の不足を確認する予定です。",
        "顧客データの損失はありませんでしたが、いくつかのバッチ処理を再実行する必要がありました。",
        "同じ障害をより早く検知できるよう、チームは外形監視を追加しました。",
        "障害が収束するまで、ステータスページは十五分ごとに更新されました。",
    ],
    "product": [
        "ファンレス設計のため、静かなオフィスや店舗のカウンターにも設置できます。",
        "設定はウェブ管理画面またはREST APIから行い、設定内容はファイルとして書き出せます。",
        "メーカーは多くの地域で三年間の先出し交換保証を提供しています。",
        "レビューでは導入の手軽さが評価された一方、説明書の更新が遅いという指摘もありました。",
        "壁掛け、オプションのキットによるラック搭載、卓上設置のいずれにも対応します。",
    ],
    "finance": [
        "アナリストは下期の為替の影響により、やや弱い結果を予想していました。",
        "取締役会は自社株買いを承認し、配当は据え置きとしました。",
        "採算の悪い物流拠点を二か所閉鎖したことで、営業利益率が改善しました。",
        "経営陣は投資家向け説明会で通期の業績予想を据え置きました。",
        "最大規模の工場での自動化投資により、設備投資額が増えました。",
    ],
    "shipping": [
        "北回りの航路に予想された低気圧を避けるよう、航海計画が立てられました。",
        "港の混雑により、バースが空くまで約一日沖待ちしました。",
        "冷凍コンテナの温度は航海中ずっと遠隔で監視されました。",
        "通関の事前審査は本船の到着前に電子的に完了しました。",
        "長い区間では減速航行を行い、燃料消費は通常より少なく済みました。",
    ],
    "rail": [
        "発車の十分前までに駅へお越しになるようお願いしております。",
        "夏の臨時ダイヤの期間中、この列車は全席指定です。",
        "主要駅の間では車内販売が営業しています。",
        "週末は保守工事のため、短い遅れが発生する場合があります。",
        "インターネットで購入したきっぷは、スマートフォンの画面を車掌に提示できます。",
    ],
    "release": [
        "前のマイナーバージョンとの互換性が保たれているため、すべての利用者に更新を推奨します。",
        "Linux、macOS、Windows向けのバイナリは通常のダウンロードページから入手できます。",
        "変更履歴には、いくつかの文書の修正と貢献者向けガイドの更新も含まれています。",
        "メンテナーは、セキュリティポリシーに従って問題を報告した外部の研究者に謝意を示しました。",
        "廃止予定の設定項目は引き続き動作しますが、起動時に警告が表示されます。",
    ],
    "lab": [
        "研究室はコードとデータセットの多くをオープンなライセンスで公開しています。",
        "研究資金は国の競争的資金と企業との共同研究でまかなわれています。",
        "博士課程の学生は、海外の提携機関で研究する期間があります。",
        "毎月、公開セミナーを開催し、その様子はオンラインで配信されています。",
        "元メンバーによって、いくつかのスタートアップ企業が設立されました。",
    ],
}


def ja_domains() -> dict[str, tuple[Callable, Callable, list[tuple[str, str, str]]]]:
    def incident(r: random.Random, base: dict | None = None) -> dict:
        num = (base["num"] + r.choice([1, 2, -1, 5])) if base else r.randint(1000, 9899)
        return {"id": f"INC-{num}", "num": num, "who": ja_name(r), "date": ja_date(r),
                "svc": r.choice(["課金", "検索", "決済", "ログイン", "在庫管理", "通知"]),
                "code": r.choice(["503", "502", "504", "500"]), "mins": r.randint(7, 180),
                "cause": r.choice(["TLS証明書の期限切れ", "ロードバランサーの設定ミス", "主データベースのディスク容量不足",
                                    "機能フラグの誤った展開", "廃止済みホストを指すDNSレコード"])}

    def incident_doc(r: random.Random, e: dict) -> str:
        head = (f"チケット{e['id']}は、{e['date']}に{e['who']}さんが起票しました。{e['svc']}サービスが約{e['mins']}分間、"
                f"HTTP {e['code']}エラーを返したためです。")
        cause = f"{e['id']}の根本原因は{e['cause']}でした。"
        return "".join([head, *fill(r, JA_FILLER["incident"], 3), cause, *fill(r, JA_FILLER["incident"], 2)])

    def product(r: random.Random, base: dict | None = None) -> dict:
        brand = base["brand"] if base else r.choice(["カワセミ", "ハヤブサ", "シラサギ", "ツバメ"])
        return {"brand": brand, "code": f"{r.choice(['RX', 'GX', 'TX'])}-{r.randint(100, 990)}",
                "ports": r.choice([4, 8, 12, 16, 24]), "weight": f"{r.randint(8, 60) / 10:.1f}",
                "fw": f"{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}", "price": r.randint(9800, 198000)}

    def product_doc(r: random.Random, e: dict) -> str:
        head = (f"{e['brand']}の{e['code']}ルーターは{e['ports']}個のイーサネットポートを備え、重さは{e['weight']}キロです。"
                f"出荷時のファームウェアはバージョン{e['fw']}です。")
        price = f"{e['code']}の発売時の価格は{e['price']}円でした。"
        return "".join([head, *fill(r, JA_FILLER["product"], 3), price, *fill(r, JA_FILLER["product"], 1)])

    def finance(r: random.Random, base: dict | None = None) -> dict:
        return {"co": base["co"] if base else r.choice(JA_COMPANIES), "q": r.randint(1, 4), "year": r.randint(2020, 2026),
                "rev": r.randint(120, 9900), "cfo": ja_name(r), "staff": r.randint(900, 24000)}

    def finance_doc(r: random.Random, e: dict) -> str:
        head = f"{e['co']}は、{e['year']}年度第{e['q']}四半期の売上高が{e['rev']}億円だったと発表しました。"
        cfo = f"決算は最高財務責任者の{e['cfo']}氏が説明しました。四半期末の従業員数は{e['staff']}人でした。"
        return "".join([head, *fill(r, JA_FILLER["finance"], 2), cfo, *fill(r, JA_FILLER["finance"], 2)])

    def shipping(r: random.Random, base: dict | None = None) -> dict:
        return {"id": f"SHP-{r.randint(10000, 99999)}", "port": r.choice(["横浜", "神戸", "博多", "名古屋", "清水", "苫小牧"]),
                "date": ja_date(r), "ship": r.choice(["あかつき丸", "しらなみ丸", "はやて丸", "みずほ丸", "こうよう丸", "たかちほ丸"]),
                "teu": r.randint(40, 2400), "dest": r.choice(["釜山", "上海", "高雄", "シンガポール", "ロサンゼルス"])}

    def shipping_doc(r: random.Random, e: dict) -> str:
        head = (f"出荷番号{e['id']}の貨物は、{e['date']}に{e['port']}港を{e['ship']}で出港しました。"
                f"コンテナ{e['teu']}本を積み、{e['dest']}へ向かっています。")
        return "".join([head, *fill(r, JA_FILLER["shipping"], 4)])

    def rail(r: random.Random, base: dict | None = None) -> dict:
        name = base["name"] if base else r.choice(["かもめ", "しおかぜ", "あずさ", "はくたか", "やくも"])
        return {"name": name, "no": r.randint(1, 60), "city": r.choice(JA_CITIES),
                "time": f"{r.randint(5, 22)}時{r.choice(['05', '15', '20', '35', '40', '55'])}分",
                "platform": r.randint(1, 14), "cars": r.randint(5, 14)}

    def rail_doc(r: random.Random, e: dict) -> str:
        head = (f"特急{e['name']}{e['no']}号は、{e['city']}駅を{e['time']}に{e['platform']}番線から発車します。"
                f"編成は{e['cars']}両です。")
        return "".join([head, *fill(r, JA_FILLER["rail"], 4)])

    def release(r: random.Random, base: dict | None = None) -> dict:
        proj = base["proj"] if base else r.choice(["libquartz", "tidewater", "pgsentry", "nimbusctl"])
        return {"proj": proj, "ver": f"{r.randint(1, 6)}.{r.randint(0, 30)}.{r.randint(0, 12)}",
                "cve": f"CVE-{r.randint(2021, 2026)}-{r.randint(10000, 49999)}", "date": ja_date(r), "rm": ja_name(r)}

    def release_doc(r: random.Random, e: dict) -> str:
        head = (f"{e['proj']} {e['ver']}は{e['date']}に公開され、リクエスト解析の脆弱性{e['cve']}を修正しました。"
                f"リリース担当は{e['rm']}さんです。")
        return "".join([head, *fill(r, JA_FILLER["release"], 4)])

    def lab(r: random.Random, base: dict | None = None) -> dict:
        return {"lab": r.choice(["海洋ロボティクス研究室", "干潟生態学グループ", "量子材料センター", "音響工学研究室",
                                  "計算言語学ユニット", "氷河力学グループ"]),
                "year": r.randint(1968, 2022), "head": ja_name(r), "members": r.randint(8, 140)}

    def lab_doc(r: random.Random, e: dict) -> str:
        head = f"{e['lab']}は{e['year']}年に設立され、現在は{e['head']}教授が率いています。メンバーは{e['members']}人です。"
        return "".join([head, *fill(r, JA_FILLER["lab"], 4)])

    return {
        "incident": (incident, incident_doc, [("チケット{id}を起票したのは誰ですか？", "who", "name"),
                                               ("{id}の障害は約何分間続きましたか？", "mins", "number")]),
        "product": (product, product_doc, [("{brand}の{code}の出荷時のファームウェアのバージョンは何ですか？", "fw", "identifier"),
                                           ("{brand}の{code}にはイーサネットポートがいくつありますか？", "ports", "number")]),
        "finance": (finance, finance_doc, [("{co}の{year}年度第{q}四半期の売上高は何億円でしたか？", "rev", "number"),
                                           ("{co}の{year}年度第{q}四半期の決算を説明した最高財務責任者は誰ですか？", "cfo", "name")]),
        "shipping": (shipping, shipping_doc, [("出荷番号{id}の貨物を運んだ船の名前は何ですか？", "ship", "name"),
                                              ("出荷番号{id}ではコンテナを何本積みましたか？", "teu", "number")]),
        "rail": (rail, rail_doc, [("特急{name}{no}号は何番線から発車しますか？", "platform", "number"),
                                  ("特急{name}{no}号は{city}駅を何時何分に発車しますか？", "time", "identifier")]),
        "release": (release, release_doc, [("{proj} {ver}で修正された脆弱性のCVE番号は何ですか？", "cve", "identifier"),
                                           ("{proj} {ver}のリリース担当は誰ですか？", "rm", "name")]),
        "lab": (lab, lab_doc, [("{lab}は何年に設立されましたか？", "year", "number"),
                               ("{lab}を率いているのは誰ですか？", "head", "name")]),
    }


FORMATS = ("markers", "tags", "messages")
JA_FORMATS = ("markers", "ja_headers", "messages")


def make_item(r: random.Random, lang: str, idx: int, domains: dict) -> dict:
    names = sorted(domains)
    dom = names[idx % len(names)]
    make, doc, qas = domains[dom]
    gold_e = make(r)
    question_t, key, atype = qas[(idx // len(names)) % len(qas)]
    answer = str(gold_e[key])
    docs = [doc(r, gold_e)]
    # Hard negatives: same domain, sharing the family fields; never holding the gold answer's entity key.
    n_hard = r.randint(2, 3)
    tries = 0
    while len(docs) < 1 + n_hard and tries < 50:
        tries += 1
        neg = make(r, gold_e)
        q_fields = {k for k in gold_e if "{" + k + "}" in question_t}
        if all(neg.get(k) == gold_e.get(k) for k in q_fields):
            continue  # a negative the question also matches would make the item ambiguous
        if answer in doc(random.Random(0), neg):
            continue
        docs.append(doc(r, neg))
    others = [d for d in names if d != dom]
    for od in r.sample(others, k=r.randint(3, min(6, len(others)))):
        m2, d2, _ = domains[od]
        text = d2(r, m2(r))
        if answer not in text:
            docs.append(text)
    order = list(range(len(docs)))
    r.shuffle(order)
    shuffled = [docs[i] for i in order]
    gold = order.index(0)
    fmts = FORMATS if lang == "en" else JA_FORMATS
    return {
        "id": f"{lang}-{idx:03d}",
        "lang": lang,
        "domain": dom,
        "format": fmts[idx % len(fmts)],
        "documents": shuffled,
        "question": question_t.format(**gold_e),
        "answer": answer,
        "answer_type": atype,
        "gold": gold,
    }


def generate(seed: int = 7, per_lang: int = 60) -> list[dict]:
    r = random.Random(seed)
    items = [make_item(r, "en", i, en_domains()) for i in range(per_lang)]
    items += [make_item(r, "ja", i, ja_domains()) for i in range(per_lang)]
    for it in items:
        assert it["answer"] in it["documents"][it["gold"]], it["id"]
    return items


# =============================================================================================================
# The HARD set (rag_eval_hard.jsonl): what a per-document lexical ranker gets wrong.
#
# Four kinds, each in English and Japanese, with its own templates:
#   * paraphrase: the question says it in other words ("invoicing system" for billing, "eight-port" for
#     8 ports) than its document, and sibling documents about the same brand/domain match it as well;
#   * distractor: several documents share most of the question's words about other entities (the same
#     drug in another city, the same company in another quarter); only the combination singles out the gold;
#   * version: several documents about ONE entity that differ only in a date or a version; the question
#     names the date in another format ("March 2024" for 2024-03-14), or the version string (a control);
#   * bridge: the answer needs two documents. One names the question's entity by another name (a company
#     or a ship renamed) or links it to a bridge entity (the lab where a drug was made); the other holds
#     the answer and never mentions the question's name for the entity.
# Every item also has unrelated documents from the easy set's domains. Per item: `gold_docs` (indices of
# every document the answer needs), `answer_doc` (the one holding the answer string), `kind`, `family`.
# =============================================================================================================
HARD_OUT = OUT.parent / "rag_eval_hard.jsonl"
KINDS = ("paraphrase", "distractor", "version", "bridge")

_EN_SYL = ["var", "nel", "tor", "quis", "bel", "dra", "mon", "kes", "lyn", "ost", "ri", "ven", "zal", "cor",
           "thi", "an", "mer", "sol", "dun", "ka", "pel", "ro", "vis", "tam"]
_JA_SYL = ["カ", "ル", "ミ", "ナ", "ト", "セ", "リ", "ア", "ノ", "ヴェ", "ロ", "サ", "キ", "ネ", "ラ", "ソ", "ユ",
           "メ", "ダ", "ホ", "ジ", "テ", "バ", "ニ"]
_JA_HIRA = ["さ", "く", "な", "み", "あ", "お", "き", "ほ", "し", "ゆ", "ふ", "か", "た", "ま", "の", "せ"]
_WORDS_EN = {4: "four", 8: "eight", 12: "twelve", 16: "sixteen", 24: "twenty-four", 48: "forty-eight"}
_KANJI_NUM = {4: "四", 8: "八", 12: "十二", 16: "十六", 24: "二十四", 48: "四十八"}


class Namer:
    """Invented names, unique within one item (so only the intended documents share an entity)."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.used: set[str] = set()

    def _fresh(self, make: Callable[[], str]) -> str:
        for _ in range(200):
            s = make()
            if s not in self.used and not any(s in u or u in s for u in self.used):
                self.used.add(s)
                return s
        raise RuntimeError("name pool exhausted")

    def en(self, n: int = 3) -> str:
        return self._fresh(lambda: "".join(self.r.choice(_EN_SYL) for _ in range(n)).capitalize())

    def ja(self, n: int = 4) -> str:
        return self._fresh(lambda: "".join(self.r.choice(_JA_SYL) for _ in range(n)))

    def ja_ship(self) -> str:
        return self._fresh(lambda: "".join(self.r.choice(_JA_HIRA) for _ in range(3)) + "丸")

    def en_person(self) -> str:
        return self._fresh(lambda: en_name(self.r))

    def ja_person(self) -> str:
        return self._fresh(lambda: ja_name(self.r))


def _iso(r: random.Random, year: int, month: int | None = None) -> tuple[str, int, int]:
    m = month or r.randint(1, 12)
    return f"{year}-{m:02d}-{r.randint(1, 28):02d}", year, m


def _en_pad(r: random.Random, domain: str, text: str, k: int = 3) -> str:
    return " ".join([text, *fill(r, EN_FILLER[domain], k)])


def _ja_pad(r: random.Random, domain: str, text: str, k: int = 3) -> str:
    return "".join([text, *fill(r, JA_FILLER[domain], k)])


# A hard item before shuffling: gold documents first (the answer's at 0), then the rest.
HardDraft = tuple[list[str], list[str], str, str, str]  # gold docs, other docs, question, answer, answer type

_EN_SVC = {"billing": "invoicing system", "search": "site search", "checkout": "payment flow",
           "login": "sign-in service", "inventory": "stock-tracking system", "notification": "alerts pipeline"}
_EN_CAUSE = {"an expired TLS certificate": "a TLS cert that had lapsed",
             "a misconfigured load balancer": "wrong settings on the traffic balancer",
             "a full disk on the primary database": "the main database running out of storage",
             "a bad feature flag rollout": "a feature toggle switched on too early",
             "a DNS record that pointed at a retired host": "a name-server entry aimed at a decommissioned machine"}
_JA_SVC = {"課金": "請求システム", "検索": "サイト内検索", "決済": "支払い処理", "ログイン": "サインイン機能",
           "在庫管理": "在庫の仕組み", "通知": "お知らせ配信"}
_JA_CAUSE = {"TLS証明書の期限切れ": "有効期限が過ぎたTLS証明書", "ロードバランサーの設定ミス": "負荷分散装置の誤った設定",
             "主データベースのディスク容量不足": "メインのDBの空き領域がなくなったこと",
             "機能フラグの誤った展開": "早すぎた機能切り替え", "廃止済みホストを指すDNSレコード": "撤去したサーバーを向いた名前解決の設定"}


# ---- English ------------------------------------------------------------------------------------------------
def _incident_siblings(
    r: random.Random, services: dict[str, str], causes: dict[str, str]
) -> tuple[str, str, list[tuple[str, str]]]:
    """The gold incident's (service, cause) and its three siblings: same service, other cause; same cause,
    other service; neither. Shared by both languages' paraphrase templates (same draws, same order)."""
    combos = [(s, c) for s in services for c in causes]
    svc, cause = r.choice(combos)
    sib = [r.choice([(svc, c) for c in causes if c != cause]), r.choice([(s, cause) for s in services if s != svc])]
    sib.append(r.choice([(s, c) for s, c in combos if s != svc and c != cause]))
    return svc, cause, sib


def _distinct_weight(r: random.Random, taken: list[str]) -> str:
    """A device weight in kg (one decimal) that none of `taken` has: the answer must single out one device."""
    w = f"{r.randint(8, 60) / 10:.1f}"
    while w in taken:
        w = f"{r.randint(8, 60) / 10:.1f}"
    return w


def en_paraphrase(r: random.Random, nm: Namer, v: int) -> HardDraft:
    if v % 2 == 0:  # incident described in other words
        svc, cause, sib = _incident_siblings(r, _EN_SVC, _EN_CAUSE)

        def doc(s: str, c: str, who: str) -> str:
            num = r.randint(1000, 9899)
            return _en_pad(r, "incident", f"Ticket INC-{num} was opened on {en_date(r)} by {who} after the {s} service "
                           f"returned HTTP {r.choice(['502', '503', '504'])} errors for about {r.randint(7, 180)} minutes. "
                           f"The root cause was {c}.")
        who = nm.en_person()
        gold = doc(svc, cause, who)
        others = [doc(s, c, nm.en_person()) for s, c in sib]
        # Documents that use the question's own words, about other things.
        for s in r.sample([x for x in _EN_SVC if x != svc], 2):
            others.append(_en_pad(r, "incident", f"A status report filed by {nm.en_person()} explains why the "
                                  f"{_EN_SVC[s]} went down for a planned migration; the move was announced in advance."))
        q = f"Who filed the report when the {_EN_SVC[svc]} went down because of {_EN_CAUSE[cause]}?"
        return [gold], others, q, who, "name"
    brand = nm.en(2)
    ports = r.sample(sorted(_WORDS_EN), 4)
    fanless = r.random() < 0.5
    docs, weights = [], []
    for k, p in enumerate(ports):
        w = _distinct_weight(r, weights)
        weights.append(w)
        code = f"{r.choice(['RX', 'GX', 'TX'])}-{r.randint(100, 990)}"
        fl = "a fanless " if (k == 0) == fanless else "an actively cooled "
        docs.append(_en_pad(r, "product", f"The {brand} {code} is {fl}switch that ships with {p} Ethernet ports and "
                            f"weighs {w} kg. Its firmware is updated through the web console.", 2))
    for _ in range(2):
        docs.append(_en_pad(r, "product", f"How heavy a {r.choice(['fanless', 'rack'])} switch may be depends on the mount: "
                            f"the {nm.en(2)} wall kit holds units up to {r.randint(3, 9)} kg.", 2))
    q = f"How heavy is {brand}'s {_WORDS_EN[ports[0]]}-port {'fanless' if fanless else 'actively cooled'} switch?"
    return [docs[0]], docs[1:], q, weights[0], "number"


def en_distractor(r: random.Random, nm: Namer, v: int) -> HardDraft:
    f = v % 3
    if f == 0:  # trial: same drug elsewhere, other drugs in the same city
        drugs = [nm.en(3).lower() + s for s in r.sample(["stat", "mab", "line", "tide", "nib"], 3)]
        cities = r.sample(EN_CITIES, 3)

        def doc(d: str, c: str, pi: str) -> str:
            return _en_pad(r, "trial", f"Trial NCT0{r.randint(1000000, 9999999)} tests {d} in {c}, where it enrolled "
                           f"{r.randint(60, 4200)} patients. The principal investigator of the {d} trial in {c} is {pi}.")
        pi = nm.en_person()
        gold = doc(drugs[0], cities[0], pi)
        others = [doc(drugs[0], cities[1], nm.en_person()), doc(drugs[0], cities[2], nm.en_person()),
                  doc(drugs[1], cities[0], nm.en_person()), doc(drugs[2], cities[0], nm.en_person())]
        q = f"Who is the principal investigator of the {drugs[0]} trial in {cities[0]}?"
        return [gold], others, q, pi, "name"
    if f == 1:  # rail: the same train to other places, other trains to the same place
        names = [f"{nm.en(2)} {x}" for x in r.sample(["Express", "Arrow", "Limited", "Flyer"], 2)]
        src, *dests = r.sample(EN_CITIES, 4)
        plats = r.sample(range(1, 15), 5)

        def doc(n: str, d: str, p: int) -> str:
            return _en_pad(r, "rail", f"The {n} to {d} leaves {src} from platform {p} at "
                           f"{r.randint(5, 22):02d}:{r.choice(['05', '20', '35', '50'])} and runs with {r.randint(5, 14)} cars.")
        gold = doc(names[0], dests[0], plats[0])
        others = [doc(names[0], dests[1], plats[1]), doc(names[0], dests[2], plats[2]), doc(names[1], dests[0], plats[3]),
                  doc(names[1], dests[1], plats[4])]
        q = f"From which platform does the {names[0]} to {dests[0]} leave {src}?"
        return [gold], others, q, str(plats[0]), "number"
    co = f"{nm.en(3)} {r.choice(['Foods', 'Freight', 'Systems', 'Energy'])}"
    co2 = f"{nm.en(3)} {r.choice(['Foods', 'Freight', 'Systems', 'Energy'])}"
    year, q_ = r.randint(2021, 2025), r.randint(1, 4)
    revs: list[str] = []

    def fin(c: str, qq: int, y: int) -> str:
        rev = f"{r.randint(120, 990)}.{r.randint(1, 9)}"
        while rev in revs:
            rev = f"{r.randint(120, 990)}.{r.randint(1, 9)}"
        revs.append(rev)
        return _en_pad(r, "finance", f"{c} reported revenue of ${rev} million for Q{qq} {y}, the company said in its "
                       f"quarterly filing.")
    gold = fin(co, q_, year)
    others = [fin(co, (q_ % 4) + 1, year), fin(co, q_, year - 1), fin(co, ((q_ + 1) % 4) + 1, year - 1), fin(co2, q_, year)]
    q = f"What revenue did {co} report for Q{q_} {year}, in millions of dollars?"
    return [gold], others, q, revs[0], "number"


def en_version(r: random.Random, nm: Namer, v: int) -> HardDraft:
    f = v % 3
    year = r.randint(2021, 2025)
    months = sorted(r.sample(range(1, 13), 4))
    if f in (0, 2):  # releases of one project
        proj = nm.en(2).lower() + r.choice(["db", "ctl", "kit", "-io"])
        major = r.randint(1, 5)
        vers = [f"{major}.{m}.{r.randint(0, 9)}" for m in range(len(months))]
        docs, cves, rms = [], [], []
        for ver, m in zip(vers, months):
            iso, _, _ = _iso(r, year, m)
            cve, rm = f"CVE-{year}-{r.randint(10000, 49999)}", nm.en_person()
            cves.append(cve)
            rms.append(rm)
            docs.append(_en_pad(r, "release", f"{proj} {ver} was published on {iso} and fixes {cve}, a flaw in request "
                                f"parsing. The release manager was {rm}."))
        g = r.randrange(len(docs))
        if f == 0:
            q = f"Which CVE was fixed by the {proj} release that came out in {MONTHS[months[g] - 1]} {year}?"
            ans, at = cves[g], "identifier"
        else:  # control: the version string itself is in the question
            q = f"Who was the release manager of {proj} {vers[g]}?"
            ans, at = rms[g], "name"
        others = [d for i, d in enumerate(docs) if i != g]
        others.append(_en_pad(r, "release", f"Release notes of {nm.en(2).lower()}db are published the same day a "
                              f"release comes out and list every CVE that was fixed."))
        return [docs[g]], others, q, ans, at
    brand, code = nm.en(2), f"{r.choice(['RX', 'GX', 'TX'])}-{r.randint(100, 990)}"
    docs, xs = [], []
    for m in months:
        iso, _, _ = _iso(r, year, m)
        x = f"{r.randint(2, 40) / 2:.1f}"
        while x in xs:
            x = f"{r.randint(2, 40) / 2:.1f}"
        xs.append(x)
        docs.append(_en_pad(r, "product", f"Firmware {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)} for the {brand} "
                            f"{code}, released on {iso}, raised its maximum throughput to {x} Gbit/s.", 2))
    g = r.randrange(len(docs))
    q = f"What maximum throughput did the {brand} {code} reach after the firmware update of {MONTHS[months[g] - 1]} {year}?"
    others = [d for i, d in enumerate(docs) if i != g]
    return [docs[g]], others, q, xs[g], "number"


def en_bridge(r: random.Random, nm: Namer, v: int) -> HardDraft:
    f = v % 3
    if f == 0:  # company renamed; the revenue document uses the new name only
        old, new, new2, old2 = (f"{nm.en(3)} {s}" for s in ("Foods", "Group", "Holdings", "Freight"))
        fy = r.randint(2021, 2025)
        alias = _en_pad(r, "finance", f"{old} changed its name to {new} in {fy - 1} after its merger with "
                        f"{nm.en(3)} Partners.", 2)
        rev = f"{r.randint(120, 990)}.{r.randint(1, 9)}"
        ans = _en_pad(r, "finance", f"{new} reported revenue of ${rev} million for fiscal {fy}, the company said in "
                      f"its annual filing.")
        others = [_en_pad(r, "finance", f"{nm.en(3)} Energy reported revenue of ${r.randint(120, 990)}.{r.randint(1, 9)} "
                          f"million for fiscal {fy}, the company said in its annual filing.") for _ in range(2)]
        others.append(_en_pad(r, "finance", f"{old2} changed its name to {new2} in {fy - 2}.", 3))
        q = f"What revenue did {old} report for fiscal {fy}, in millions of dollars?"
        return [ans, alias], others, q, rev, "number"
    if f == 1:  # bridge entity: drug -> lab -> head
        drug, lab, lab2, lab3 = nm.en(3).lower() + "stat", f"{nm.en(2)} Chemistry Lab", f"{nm.en(2)} Biology Lab", f"{nm.en(2)} Pharma Lab"
        head = nm.en_person()
        link = _en_pad(r, "lab", f"{drug.capitalize()} was first synthesised in {r.randint(1990, 2020)} at the {lab}, "
                       f"which patented it soon after.", 2)
        ans = _en_pad(r, "lab", f"The {lab} is led by {head} and has {r.randint(8, 140)} members.")
        others = [_en_pad(r, "lab", f"The {lab2} is led by {nm.en_person()} and has {r.randint(8, 140)} members."),
                  _en_pad(r, "lab", f"{nm.en(3).capitalize()}mab was first synthesised at the {lab3}, which leads a "
                          f"research group on antibodies.", 2),
                  _en_pad(r, "lab", f"The {lab3} is led by {nm.en_person()}.")]
        q = f"Who leads the research group where {drug} was first synthesised?"
        return [ans, link], others, q, head, "name"
    old, new, other = (f"MV {nm.en(3)}" for _ in range(3))
    port = r.choice(EN_CITIES)
    teus = r.sample(range(40, 2400), 3)
    alias = _en_pad(r, "shipping", f"The {old} was renamed {new} when {nm.en(3)} Lines bought the vessel in "
                    f"{r.randint(2015, 2024)}.", 2)

    def ship(s: str, teu: int) -> str:
        return _en_pad(r, "shipping", f"Shipment SHP-{r.randint(10000, 99999)} left {port} on {en_date(r)} aboard the "
                       f"{s}, carrying {teu} containers bound for {r.choice(EN_CITIES)}.", 3)
    ans = ship(new, teus[0])
    others = [ship(other, teus[1]), ship(f"MV {nm.en(3)}", teus[2])]
    q = f"How many containers did the ship formerly called the {old} carry out of {port}?"
    return [ans, alias], others, q, str(teus[0]), "number"


# ---- Japanese -----------------------------------------------------------------------------------------------
def ja_paraphrase(r: random.Random, nm: Namer, v: int) -> HardDraft:
    if v % 2 == 0:
        svc, cause, sib = _incident_siblings(r, _JA_SVC, _JA_CAUSE)

        def doc(s: str, c: str, who: str) -> str:
            return _ja_pad(r, "incident", f"チケットINC-{r.randint(1000, 9899)}は、{ja_date(r)}に{who}さんが起票しました。"
                           f"{s}サービスが約{r.randint(7, 180)}分間、HTTP {r.choice(['502', '503', '504'])}エラーを返したためです。"
                           f"根本原因は{c}でした。")
        who = nm.ja_person()
        gold = doc(svc, cause, who)
        others = [doc(s, c, nm.ja_person()) for s, c in sib]
        for s in r.sample([x for x in _JA_SVC if x != svc], 2):
            others.append(_ja_pad(r, "incident", f"{nm.ja_person()}さんが上げた報告によると、{_JA_SVC[s]}は計画された移行作業の"
                                  f"ために止まりましたが、事前に告知されていました。"))
        q = f"{_JA_CAUSE[cause]}が原因で{_JA_SVC[svc]}が止まったとき、報告を上げたのは誰ですか？"
        return [gold], others, q, who, "name"
    brand = nm.ja(3)
    ports = r.sample(sorted(_KANJI_NUM), 4)
    fanless = r.random() < 0.5
    docs, weights = [], []
    for k, p in enumerate(ports):
        w = _distinct_weight(r, weights)
        weights.append(w)
        code = f"{r.choice(['RX', 'GX', 'TX'])}-{r.randint(100, 990)}"
        fl = "ファンレス" if (k == 0) == fanless else "ファン付き"
        docs.append(_ja_pad(r, "product", f"{brand}の{code}は{fl}のスイッチで、{p}個のイーサネットポートを備え、"
                            f"重さは{w}キロです。", 2))
    for _ in range(2):
        docs.append(_ja_pad(r, "product", f"スイッチの重さの上限は設置方法で決まり、{nm.ja(3)}の壁掛けキットは"
                            f"{r.randint(3, 9)}キロまでの機器に対応します。", 2))
    q = f"{brand}の{_KANJI_NUM[ports[0]]}ポートの{'ファンレス' if fanless else 'ファン付き'}スイッチの重さは何キロですか？"
    return [docs[0]], docs[1:], q, weights[0], "number"


def ja_distractor(r: random.Random, nm: Namer, v: int) -> HardDraft:
    f = v % 3
    if f == 0:
        drugs = [nm.ja(4) + s for s in r.sample(["スタット", "マブ", "リン", "チド"], 3)]
        cities = r.sample(JA_CITIES, 3)

        def doc(d: str, c: str, pi: str) -> str:
            return _ja_pad(r, "lab", f"{d}の治験NCT0{r.randint(1000000, 9999999)}は{c}で実施され、{r.randint(60, 4200)}人の"
                           f"患者が参加しました。{c}での{d}の治験の責任医師は{pi}医師です。")
        pi = nm.ja_person()
        gold = doc(drugs[0], cities[0], pi)
        others = [doc(drugs[0], cities[1], nm.ja_person()), doc(drugs[0], cities[2], nm.ja_person()),
                  doc(drugs[1], cities[0], nm.ja_person()), doc(drugs[2], cities[0], nm.ja_person())]
        q = f"{cities[0]}で行われている{drugs[0]}の治験の責任医師は誰ですか？"
        return [gold], others, q, pi, "name"
    if f == 1:
        names = [nm.ja(3) for _ in range(2)]
        src, *dests = r.sample(JA_CITIES, 4)
        plats = r.sample(range(1, 15), 5)

        def doc(n: str, d: str, p: int) -> str:
            return _ja_pad(r, "rail", f"{d}行きの特急{n}は、{src}駅の{p}番線から{r.randint(5, 22)}時"
                           f"{r.choice(['05', '20', '35', '50'])}分に発車します。編成は{r.randint(5, 14)}両です。")
        gold = doc(names[0], dests[0], plats[0])
        others = [doc(names[0], dests[1], plats[1]), doc(names[0], dests[2], plats[2]), doc(names[1], dests[0], plats[3]),
                  doc(names[1], dests[1], plats[4])]
        q = f"{src}駅から{dests[0]}へ向かう特急{names[0]}は何番線から発車しますか？"
        return [gold], others, q, f"{plats[0]}番線", "number"
    co, co2 = nm.ja(3) + "物流", nm.ja(3) + "精機"
    year, q_ = r.randint(2021, 2025), r.randint(1, 4)
    revs: list[str] = []

    def fin(c: str, qq: int, y: int) -> str:
        rev = str(r.randint(120, 9900))
        while rev in revs:
            rev = str(r.randint(120, 9900))
        revs.append(rev)
        return _ja_pad(r, "finance", f"{c}は、{y}年度第{qq}四半期の売上高が{rev}億円だったと発表しました。")
    gold = fin(co, q_, year)
    others = [fin(co, (q_ % 4) + 1, year), fin(co, q_, year - 1), fin(co, ((q_ + 1) % 4) + 1, year - 1), fin(co2, q_, year)]
    q = f"{co}の{year}年度第{q_}四半期の売上高は何億円でしたか？"
    return [gold], others, q, f"{revs[0]}億円", "number"


def ja_version(r: random.Random, nm: Namer, v: int) -> HardDraft:
    f = v % 3
    year = r.randint(2021, 2025)
    months = sorted(r.sample(range(1, 13), 4))
    if f in (0, 2):
        proj = nm.en(2).lower() + r.choice(["db", "ctl", "kit"])
        major = r.randint(1, 5)
        vers = [f"{major}.{m}.{r.randint(0, 9)}" for m in range(len(months))]
        docs, cves, rms = [], [], []
        for ver, m in zip(vers, months):
            iso, _, _ = _iso(r, year, m)
            cve, rm = f"CVE-{year}-{r.randint(10000, 49999)}", nm.ja_person()
            cves.append(cve)
            rms.append(rm)
            docs.append(_ja_pad(r, "release", f"{proj} {ver}は{iso}に公開され、リクエスト解析の脆弱性{cve}を修正しました。"
                                f"リリース担当は{rm}さんです。"))
        g = r.randrange(len(docs))
        if f == 0:
            q = f"{year}年{months[g]}月に公開された{proj}のリリースで修正された脆弱性のCVE番号は何ですか？"
            ans, at = cves[g], "identifier"
        else:
            q = f"{proj} {vers[g]}のリリース担当は誰ですか？"
            ans, at = rms[g], "name"
        others = [d for i, d in enumerate(docs) if i != g]
        others.append(_ja_pad(r, "release", f"{nm.en(2).lower()}dbのリリースノートは公開と同じ日に出され、修正された"
                              f"脆弱性のCVE番号をすべて載せています。"))
        return [docs[g]], others, q, ans, at
    brand, code = nm.ja(3), f"{r.choice(['RX', 'GX', 'TX'])}-{r.randint(100, 990)}"
    docs, xs = [], []
    for m in months:
        iso, _, _ = _iso(r, year, m)
        x = f"{r.randint(2, 40) / 2:.1f}"
        while x in xs:
            x = f"{r.randint(2, 40) / 2:.1f}"
        xs.append(x)
        docs.append(_ja_pad(r, "product", f"{iso}に公開された{brand}の{code}のファームウェア{r.randint(1, 9)}.{r.randint(0, 20)}."
                            f"{r.randint(0, 9)}で、最大スループットは毎秒{x}ギガビットに上がりました。", 2))
    g = r.randrange(len(docs))
    q = f"{year}年{months[g]}月のファームウェア更新の後、{brand}の{code}の最大スループットは毎秒何ギガビットになりましたか？"
    others = [d for i, d in enumerate(docs) if i != g]
    return [docs[g]], others, q, xs[g], "number"


def ja_bridge(r: random.Random, nm: Namer, v: int) -> HardDraft:
    f = v % 3
    if f == 0:
        old, new, old2, new2 = nm.ja(4) + "物流", nm.ja(4) + "ホールディングス", nm.ja(4) + "電機", nm.ja(4) + "テクノ"
        fy = r.randint(2021, 2025)
        alias = _ja_pad(r, "finance", f"{old}は{fy - 1}年に{nm.ja(3)}商事との合併を機に、社名を{new}に変更しました。", 2)
        rev = str(r.randint(120, 9900))
        ans = _ja_pad(r, "finance", f"{new}は、{fy}年度の売上高が{rev}億円だったと発表しました。")
        others = [_ja_pad(r, "finance", f"{nm.ja(4)}エナジーは、{fy}年度の売上高が{r.randint(120, 9900)}億円だったと発表しました。")
                  for _ in range(2)]
        others.append(_ja_pad(r, "finance", f"{old2}は{fy - 2}年に社名を{new2}に変更しました。", 3))
        q = f"{old}の{fy}年度の売上高は何億円でしたか？"
        return [ans, alias], others, q, f"{rev}億円", "number"
    if f == 1:
        drug, lab, lab2, lab3 = nm.ja(4) + "スタット", nm.ja(3) + "化学研究室", nm.ja(3) + "生物研究室", nm.ja(3) + "創薬研究室"
        head = nm.ja_person()
        link = _ja_pad(r, "lab", f"{drug}は{r.randint(1990, 2020)}年に{lab}で初めて合成され、その後すぐに特許が取得されました。", 2)
        ans = _ja_pad(r, "lab", f"{lab}を率いているのは{head}教授で、メンバーは{r.randint(8, 140)}人です。")
        others = [_ja_pad(r, "lab", f"{lab2}を率いているのは{nm.ja_person()}教授で、メンバーは{r.randint(8, 140)}人です。"),
                  _ja_pad(r, "lab", f"{nm.ja(4)}マブは{lab3}で初めて合成されました。", 2),
                  _ja_pad(r, "lab", f"{lab3}を率いているのは{nm.ja_person()}教授です。")]
        q = f"{drug}が初めて合成された研究室を率いているのは誰ですか？"
        return [ans, link], others, q, head, "name"
    old, new, other = nm.ja_ship(), nm.ja_ship(), nm.ja_ship()
    port = r.choice(["横浜", "神戸", "博多", "名古屋", "清水", "苫小牧"])
    teus = r.sample(range(40, 2400), 3)
    alias = _ja_pad(r, "shipping", f"{old}は{r.randint(2015, 2024)}年に{nm.ja(3)}海運に買い取られ、{new}と改名されました。", 2)

    def ship(s: str, teu: int) -> str:
        return _ja_pad(r, "shipping", f"出荷番号SHP-{r.randint(10000, 99999)}の貨物は、{ja_date(r)}に{port}港を{s}で"
                       f"出港しました。コンテナ{teu}本を積み、{r.choice(['釜山', '上海', '高雄', 'シンガポール'])}へ向かっています。", 3)
    ans = ship(new, teus[0])
    others = [ship(other, teus[1]), ship(nm.ja_ship(), teus[2])]
    q = f"かつて{old}と呼ばれていた船は、{port}港からコンテナを何本運びましたか？"
    return [ans, alias], others, q, f"{teus[0]}本", "number"


HARD_MAKERS: dict[str, dict[str, Callable[[random.Random, Namer, int], HardDraft]]] = {
    "en": {"paraphrase": en_paraphrase, "distractor": en_distractor, "version": en_version, "bridge": en_bridge},
    "ja": {"paraphrase": ja_paraphrase, "distractor": ja_distractor, "version": ja_version, "bridge": ja_bridge},
}
_FAMILIES = {"paraphrase": ("incident", "switch"), "distractor": ("trial", "rail", "quarter"),
             "version": ("release_by_date", "firmware_by_date", "release_by_version"),
             "bridge": ("renamed_company", "bridge_lab", "renamed_ship")}


def make_hard_item(r: random.Random, lang: str, kind: str, v: int) -> dict:
    domains = en_domains() if lang == "en" else ja_domains()
    for _ in range(20):
        gold_docs, others, question, answer, atype = HARD_MAKERS[lang][kind](r, Namer(r), v)
        # Unrelated documents from the easy set's domains, for realistic width.
        for od in r.sample(sorted(domains), k=r.randint(2, 3)):
            make, doc, _ = domains[od]
            others.append(doc(r, make(r)))
        docs = gold_docs + others
        # The answer string must sit in its document only, and every document must be distinct.
        if any(answer in d for d in docs[1:]) or len(set(docs)) != len(docs):
            continue
        order = list(range(len(docs)))
        r.shuffle(order)
        fmts = FORMATS if lang == "en" else JA_FORMATS
        return {
            "id": f"hard-{lang}-{kind}-{v:02d}",
            "lang": lang,
            "kind": kind,
            "family": _FAMILIES[kind][v % len(_FAMILIES[kind])],
            "format": fmts[v % len(fmts)],
            "documents": [docs[i] for i in order],
            "question": question,
            "answer": answer,
            "answer_type": atype,
            "answer_doc": order.index(0),
            "gold_docs": sorted(order.index(i) for i in range(len(gold_docs))),
        }
    raise RuntimeError(f"could not make a valid {lang}/{kind} item")


def generate_hard(seed: int = 13, per_kind: int = 30) -> list[dict]:
    r = random.Random(seed)
    items = [make_hard_item(r, lang, kind, v) for lang in ("en", "ja") for kind in KINDS for v in range(per_kind)]
    for it in items:
        assert it["answer"] in it["documents"][it["answer_doc"]], it["id"]
        assert it["answer_doc"] in it["gold_docs"], it["id"]
    return items


def write_jsonl(items: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--per-lang", type=int, default=60)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--hard-seed", type=int, default=13)
    ap.add_argument("--per-kind", type=int, default=30, help="hard items per kind and language")
    ap.add_argument("--hard-out", type=Path, default=HARD_OUT)
    a = ap.parse_args()
    items = generate(a.seed, a.per_lang)
    write_jsonl(items, a.out)
    print(f"wrote {len(items)} items to {a.out}")
    hard = generate_hard(a.hard_seed, a.per_kind)
    write_jsonl(hard, a.hard_out)
    print(f"wrote {len(hard)} items to {a.hard_out}")


if __name__ == "__main__":
    main()
