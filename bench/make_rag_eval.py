"""Generate extproc/compression/data/rag_eval.jsonl: a RAG QA set for `aigrid eval-compression`.

Reproducible (seeded): `python bench/make_rag_eval.py [--seed 7] [--per-lang 60] [--out PATH]`.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--per-lang", type=int, default=60)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    items = generate(a.seed, a.per_lang)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} items to {a.out}")


if __name__ == "__main__":
    main()
