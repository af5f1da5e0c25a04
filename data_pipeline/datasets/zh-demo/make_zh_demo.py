"""Writes products.csv and judgments.csv of the Chinese demo catalogue from the lists below.

The titles are FirstLight's own, written for this demo: for each kind of product a handful of
items and the words a Chinese shop puts in titles, combined a few ways. Each query lists the kinds
of product that answer it, graded 3 (what was asked), 2 (a fair substitute) or 1 (judged, and not
what was asked); a product of a kind the query does not list is not relevant. Tags refine a grade
where the kind alone cannot decide it ("iPhone 手机壳": a case for another phone is not the answer).

    python data_pipeline/datasets/zh-demo/make_zh_demo.py   # rewrites the two CSV files beside it
"""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).parent

# kind -> (category path, [(title, tags), ...])
CATALOGUE: dict[str, tuple[str, list[tuple[str, set]]]] = {}


# words in a title that tag it for the queries that ask for them
TITLE_TAGS = {"宿舍": "dorm", "午睡": "nap", "电饭煲": "appliance", "空气炸锅": "appliance", "电热水壶": "appliance",
              "料理机": "appliance", "情人节": "valentine", "台灯": "desk", "炒锅": "pot", "炖锅": "pot",
              "蒸锅": "pot", "保温": "insulated", "焖烧": "insulated", "瑜伽垫": "mat",
              "健身垫": "mat", "跑鞋": "run", "跑步鞋": "run", "羽毛球": "badminton", "头盔": "safety",
              "尾灯": "safety", "锁": "safety", "野餐": "picnic", "早餐": "breakfast", "颈椎": "neck", "护颈": "neck",
              "心率": "heart", "无线": "wireless", "蓝牙": "wireless", "防晒": "sun", "露营": "camp"}


def kind(name: str, category: str, titles: list[str | tuple[str, set]]) -> None:
    titles = [(t, set()) if isinstance(t, str) else t for t in titles]
    CATALOGUE[name] = (category, [(t, tags | {tag for word, tag in TITLE_TAGS.items() if word in t})
                                  for t, tags in titles])


# --- 服装 clothing ---------------------------------------------------------------------------
kind("light_jacket", "服装/外套/夹克风衣", [
    "春秋季男士休闲夹克 薄款立领外套", "女士中长款风衣 春季新款 卡其色", "轻薄防风夹克 男款 春游出行",
    "经典双排扣风衣 女 米白色", "男士工装夹克 多口袋 春秋款", "女士短款小香风外套 春装",
    "连帽薄款外套 男女同款 户外休闲", "棒球服夹克 春季 学生款", "复古牛仔外套 女 宽松水洗蓝",
    "男士牛仔夹克 经典翻领 春秋薄款", "针织开衫外套 女 春季薄款 温柔风", "休闲西装外套 女 春秋 单排扣", "男士春季薄款风衣 中长款 商务休闲", "灯芯绒夹克 复古 宽松 男女款",
    "短款机车皮衣 PU 春秋 女", "escape 户外软壳夹克 轻量 防风 春游",
])
kind("sun_jacket", "服装/外套/防晒衣", [
    "冰丝防晒衣 女 夏季 UPF50+ 轻薄透气", "户外防晒皮肤衣 男 超薄速干", "防紫外线防晒外套 带帽 骑行",
    "儿童防晒衣 轻薄款 夏季户外", "upf50+ 防晒服 女 长款 遮脸", "男士冰感防晒衣 钓鱼 透气", "情侣款防晒外套 便携 可收纳",
])
kind("shell_jacket", "服装/外套/冲锋衣", [
    "户外冲锋衣 男 防水防风 单层 春秋", "女士冲锋衣 三合一 可拆卸内胆", "轻量冲锋衣 徒步登山 防泼水",
    "软壳冲锋衣 抓绒内里 秋冬", "情侣款冲锋衣 露营 春游 防风外套", "儿童冲锋衣 防水 户外 春秋",
])
kind("winter_coat", "服装/外套/羽绒棉服", [
    "加厚羽绒服 男 冬季 90白鸭绒 连帽", "女士长款羽绒服 过膝 冬天保暖", "轻薄羽绒服 可收纳 短款",
    "冬季棉服 男 加厚 面包服", "羊毛大衣 女 双面呢 冬季 中长款", "儿童羽绒服 加厚 冬装",
    "东北零下三十度 保暖棉衣 加绒加厚", "羊羔毛外套 女 冬季 加厚 短款", "男士派克大衣 毛领 可拆 冬季",
])
kind("tshirt", "服装/上衣/T恤", [
    "纯棉短袖T恤 男 白色 夏季 圆领", "女士宽松印花T恤 ins风", "速干运动T恤 男 透气 跑步健身",
    "冰丝短袖 运动上衣 女 吸汗速干", "情侣装T恤 纯色 基础款", "儿童纯棉T恤 卡通印花", "重磅纯棉T恤 男 宽松 不透", "长袖T恤 女 打底 春秋 修身", "POLO衫 男 商务 短袖 翻领",
])
kind("shirt", "服装/上衣/衬衫", [
    "男士长袖白衬衫 商务正装 免烫", "女士雪纺衬衫 通勤 春季", "亚麻衬衫 男 夏季 宽松透气",
    "格子衬衫 男 休闲 春秋款", "牛津纺衬衫 男 长袖 学院风", "防晒衬衫 女 夏季 薄款 开衫",
])
kind("hoodie", "服装/上衣/卫衣", [
    "加绒连帽卫衣 男 冬季 宽松", "女士圆领卫衣 春秋薄款 纯色", "情侣款卫衣 潮牌 印花", "儿童卫衣 加厚 秋冬", "拉链开衫卫衣 男 运动 春秋", "国潮刺绣卫衣 宽松 连帽",
])
kind("dress", "服装/裙装/连衣裙", [
    "碎花连衣裙 女 夏季 法式 长裙", "雪纺连衣裙 春季 收腰 显瘦", "针织连衣裙 秋冬 打底", "小黑裙 晚宴 礼服裙", "半身裙 A字 高腰 百褶", "吊带连衣裙 度假 沙滩 海边",
])
kind("pants", "服装/裤装", [
    "直筒牛仔裤 男 修身 弹力", "女士阔腿裤 高腰 垂感 西装裤", "速干运动裤 男 跑步 束脚",
    "瑜伽裤 女 高腰提臀 健身", "户外徒步裤 防泼水 弹力 春秋", "加绒运动裤 冬季 保暖", "休闲工装裤 男 多口袋 宽松", "冰丝阔腿裤 女 夏季 薄款", "儿童运动裤 纯棉 春秋",
])
kind("sneakers", "服装/鞋/运动鞋", [
    "男士跑步鞋 轻便透气 减震", "女士小白鞋 百搭 休闲板鞋", "专业跑鞋 马拉松 碳板 竞速",
    "户外徒步鞋 防滑耐磨 登山", "儿童运动鞋 魔术贴 防滑", "篮球鞋 男 高帮 实战", "帆布鞋 男女 低帮 经典", "老爹鞋 女 增高 厚底", "溯溪鞋 涉水 速干 户外",
])
kind("hat", "服装/配饰/帽子", [
    "遮阳帽 女 夏季 大檐 防紫外线", "棒球帽 男 休闲 鸭舌帽", "针织毛线帽 冬季 保暖", "渔夫帽 户外 防晒 可折叠", "防风面罩 骑行 冬季 保暖", "羊毛围巾 男女 冬季 格子",
])
kind("socks", "服装/配饰/袜子", [
    "纯棉中筒袜 男 10双装 吸汗", "运动袜 毛巾底 跑步 防臭", "女士船袜 隐形 夏季 薄款", "加厚羊毛袜 冬季 保暖 中筒", "压缩袜 跑步 小腿 运动",
])

# --- 家居 home ---------------------------------------------------------------------------------
kind("bedding", "家居/床品", [
    "纯棉四件套 1.8m床 被套床单", "夏凉被 空调被 可水洗", "冬季加厚棉被 保暖 10斤", "天丝四件套 冰丝 夏季",
    "学生宿舍床上三件套 单人 0.9m", "电热毯 单人 宿舍 安全 调温", "床垫 榻榻米 折叠 加厚", "蚊帐 家用 1.5m 免安装",
])
kind("pillow", "家居/床品/枕头", [
    "记忆棉枕头 护颈椎 慢回弹", "乳胶枕 泰国天然 成人", "荞麦壳枕头 单人 硬枕", "午睡枕 办公室 趴睡枕", "U型枕 护颈 旅行 飞机", "儿童枕头 幼儿园 透气 可水洗",
])
kind("storage", "家居/收纳", [
    "塑料收纳箱 大号 衣物整理 带盖", "桌面收纳盒 化妆品 文具", "衣柜收纳袋 棉被 防尘", "宿舍床下收纳箱 抽屉式", "鞋子收纳盒 透明 可叠加 防尘", "真空压缩袋 大号 被子 衣物", "厨房置物架 落地 多层",
])
kind("cup", "家居/水杯", [
    "316不锈钢保温杯 500ml 男女", "大容量运动水杯 1升 刻度 带吸管", "玻璃水杯 耐热 办公室 带盖",
    "儿童保温杯 吸管杯 上学用", "陶瓷马克杯 咖啡杯 情侣", "焖烧杯 大容量 保温饭盒", "户外折叠水杯 硅胶 便携 露营",
])
kind("cookware", "家居/厨具", [
    "不粘锅炒锅 家用 燃气电磁炉通用", "铸铁锅 炖锅 珐琅 24cm", "电饭煲 4升 家用 智能预约",
    "空气炸锅 家用 大容量 无油", "菜刀套装 不锈钢 厨房刀具", "砧板 实木 切菜板 防霉", "电热水壶 1.7L 不锈钢 自动断电", "料理机 破壁机 家用 豆浆", "蒸锅 不锈钢 三层 加厚",
])
kind("lamp", "家居/灯具", [
    "LED护眼台灯 学生 宿舍 书桌", "充电式小台灯 宿舍 床头 夹子", "落地灯 客厅 ins风 遥控",
    "床头小夜灯 感应 卧室", "可调光台灯 办公 阅读 国AA级", "吸顶灯 卧室 LED 简约", "户外露营灯 充电 挂灯 氛围",
])
kind("towel", "家居/毛巾浴巾", [
    "纯棉毛巾 洗脸 吸水 不掉毛 4条装", "大浴巾 成人 加厚 柔软", "速干毛巾 运动 健身 便携", "浴袍 男女 加厚 吸水 秋冬", "干发帽 超强吸水 速干",
])
kind("slippers", "家居/拖鞋", [
    "居家拖鞋 夏季 防滑 浴室", "冬季棉拖鞋 毛绒 保暖 包跟", "情侣拖鞋 EVA 软底", "凉拖鞋 外穿 男 夏季 沙滩",
])

# --- 数码 electronics --------------------------------------------------------------------------
kind("phone_case", "数码/手机配件/手机壳", [
    ("适用iPhone 15 手机壳 透明防摔 硅胶", {"iphone"}), ("iPhone 15 Pro Max 磁吸手机壳 MagSafe", {"iphone"}),
    ("苹果14手机壳 iPhone14 液态硅胶 全包", {"iphone"}), ("iPhone 13 保护壳 皮革 商务", {"iphone"}),
    ("适用华为Mate 60 手机壳 防摔 素皮", {"huawei"}), ("华为P60 透明手机壳 气囊防摔", {"huawei"}),
    ("小米14 手机壳 磨砂 超薄", {"xiaomi"}), ("OPPO Find X7 手机壳 全包 镜头保护", {"oppo"}),
])
kind("screen_protector", "数码/手机配件/贴膜", [
    ("iPhone 15 钢化膜 全屏 防窥", {"iphone"}), ("华为Mate 60 曲面膜 高清", {"huawei"}),
    ("平板电脑 类纸膜 书写 绘画", set()),
])
kind("charger", "数码/充电", [
    ("20W PD快充充电头 适用iPhone", {"iphone"}), ("65W 氮化镓充电器 多口 笔记本 Type-C", {"laptop"}),
    ("华为超级快充 66W 充电器套装", {"huawei"}), ("无线充电器 15W 磁吸 桌面", set()),
    ("车载充电器 双USB 快充", set()),
])
kind("cable", "数码/充电/数据线", [
    ("Type-C 数据线 100W 快充 编织 2米", {"laptop"}), ("苹果数据线 Lightning 快充 1米", {"iphone"}),
    ("三合一数据线 一拖三 充电线", set()), ("USB-C to C 笔记本 充电线 240W", {"laptop"}),
])
kind("power_bank", "数码/充电/充电宝", [
    "20000毫安 充电宝 22.5W快充 大容量", "迷你充电宝 10000mAh 自带线 小巧", "磁吸充电宝 无线 适用苹果",
    "户外移动电源 大容量 露营 220V",
])
kind("earphones", "数码/影音/耳机", [
    ("真无线蓝牙耳机 主动降噪 长续航", {"anc"}), ("头戴式降噪耳机 无线 蓝牙5.3", {"anc"}),
    ("运动蓝牙耳机 挂耳式 防汗 跑步", {"sport"}), ("骨传导耳机 运动 蓝牙 不入耳 防水", {"sport"}),
    ("有线耳机 Type-C 入耳式 带麦", set()), ("学生网课耳机 头戴 有线 带麦克风", set()),
])
kind("speaker", "数码/影音/音箱", [
    "便携蓝牙音箱 户外 防水 低音炮", "桌面电脑音箱 有线 USB供电", "智能音箱 语音助手 家用", "无线麦克风 K歌 音箱一体", "回音壁 电视 家庭影院",
])
kind("watch", "数码/智能穿戴", [
    "智能手表 运动 心率 血氧 监测", "儿童电话手表 定位 视频通话", "运动手环 计步 睡眠监测 防水", "老人智能手表 跌倒报警 定位",
    ("Apple Watch 表带 硅胶 运动款", {"iphone"}),
])
kind("computer_acc", "数码/电脑外设", [
    "无线鼠标 静音 办公 笔记本", "机械键盘 青轴 游戏 RGB", "蓝牙键盘 平板 ipad 便携", "笔记本电脑支架 铝合金 散热",
    "游戏鼠标 有线 电竞 可编程", "USB扩展坞 Type-C 多合一 HDMI", "鼠标垫 超大 加厚 桌垫", "高清摄像头 电脑 网课 带麦",
    "移动硬盘 1TB USB3.0 高速",
])

# --- 运动户外 sports and outdoors --------------------------------------------------------------
kind("yoga", "运动/健身/瑜伽", [
    "加厚瑜伽垫 防滑 初学者 家用 10mm", "TPE瑜伽垫 双面 防滑 健身垫", "瑜伽砖 高密度 泡沫", "弹力带 拉力带 瑜伽 健身", "瑜伽服套装 女 速干 健身房", "泡沫轴 肌肉放松 按摩滚轴",
])
kind("weights", "运动/健身/器械", [
    "可调节哑铃 男士 家用 健身器材 20kg", "女士小哑铃 包胶 2kg 一对", "壶铃 家用 健身 8kg", "跳绳 计数 燃脂 健身",
    "健腹轮 腹肌 初学者", "俯卧撑支架 家用 练胸", "动感单车 家用 静音 健身车", "引体向上器 门上 单杠 免打孔",
])
kind("tent", "运动/户外/帐篷露营", [
    "户外帐篷 3-4人 防雨 速开 露营", "天幕 遮阳 户外 露营 野餐", "折叠露营椅 月亮椅 便携", "露营车 手推车 折叠 野餐",
    "野餐垫 防潮 加厚 春游 户外", "睡袋 成人 春秋 户外 露营", "卡式炉 户外 便携 野炊", "防潮垫 自动充气 加厚 帐篷用",
])
kind("backpack", "运动/户外/背包", [
    "登山包 40L 户外 徒步 双肩包", "轻便双肩包 旅行 防水 折叠", "运动腰包 跑步 手机包", "学生书包 大容量 护脊", "户外水袋 骑行 徒步 2L", "登山杖 碳素 超轻 伸缩",
])
kind("ball", "运动/球类", [
    "羽毛球拍 全碳素 单拍 进攻型", "羽毛球 耐打 12只装 比赛", "篮球 7号 室外 耐磨", "足球 5号 成人 比赛训练",
    "乒乓球拍 横拍 初学者 套装", "网球拍 碳素 初学者 单人训练", "排球 软式 中考 训练",
])
kind("cycling", "运动/骑行", [
    "自行车头盔 一体成型 骑行 安全帽", "骑行手套 半指 防滑 夏季", "山地自行车 变速 26寸", "自行车尾灯 USB充电 警示灯", "骑行服 套装 男 夏季 速干", "自行车锁 防盗 U型锁",
])
kind("swim", "运动/游泳", [
    "泳镜 高清 防雾 防水 成人", "泳帽 硅胶 防水 长发", "女士连体泳衣 保守 显瘦", "男士泳裤 速干 平角", "儿童游泳圈 腋下圈 加厚", "防水耳塞 游泳 降噪 硅胶",
])

# --- 食品 food ---------------------------------------------------------------------------------
kind("tea", "食品/茶叶", [
    ("西湖龙井 绿茶 2024新茶 250g 罐装", set()), ("安溪铁观音 乌龙茶 浓香型 500g", set()),
    ("云南普洱茶 熟茶 茶饼 357g", set()), ("茶叶礼盒 高档 送长辈 武夷山大红袍", {"gift"}),
    ("正山小种 红茶 礼盒装 送礼", {"gift"}), ("茉莉花茶 浓香 袋泡茶 100包", set()), "白茶 福鼎 寿眉 茶饼", "菊花茶 胎菊 清热 罐装",
])
kind("coffee", "食品/咖啡", [
    "挂耳咖啡 手冲 黑咖啡 20袋", "冻干速溶咖啡 无糖 美式", "咖啡豆 意式 深烘 1kg", "三合一速溶咖啡 奶香 100条", "冷萃咖啡液 浓缩 即饮", "咖啡胶囊 意式浓缩 兼容机",
])
kind("nuts", "食品/零食/坚果", [
    ("每日坚果 混合果仁 30包 孕妇 儿童", set()), ("坚果礼盒 年货 送礼 大礼包", {"gift"}),
    ("碧根果 奶油味 500g", set()), ("原味腰果 烘焙 无添加 罐装", set()), "开心果 无漂白 500g", "新疆红枣 特级 骏枣 1kg",
])
kind("snacks", "食品/零食", [
    ("儿童零食 大礼包 饼干 薯片 混合装", {"kids"}), ("海苔脆片 儿童 即食 无添加", {"kids"}),
    ("麻辣小龙虾 即食 网红零食", set()), ("牛肉干 内蒙古 风干 手撕", set()),
    ("低卡零食 魔芋爽 代餐 解馋", {"diet"}), ("全麦饼干 无蔗糖 饱腹 代餐", {"diet"}),
    "辣条 怀旧 零食 大礼包", ("果冻 水果味 儿童 零食 分享装", {"kids"}), ("鸡胸肉 即食 低脂 高蛋白 健身", {"diet"}),
])
kind("staples", "食品/粮油", [
    "东北大米 五常稻花香 10斤", "泰国香米 5kg 长粒", "压榨花生油 一级 5L", "手工挂面 鸡蛋面 1kg",
    "自热米饭 速食 方便 户外", "方便面 红烧牛肉面 箱装", "螺蛳粉 广西柳州 速食 袋装", "燕麦片 即食 无糖 早餐 1kg", "黑芝麻糊 早餐 冲饮",
])
kind("dairy", "食品/乳品饮料", [
    "纯牛奶 全脂 250ml 24盒 早餐奶", "低脂高钙牛奶 学生 早餐", "燕麦奶 植物蛋白饮料 无糖", "无糖酸奶 原味 风味发酵乳",
    "运动饮料 电解质水 补水 整箱", "鲜榨橙汁 NFC 冷藏 1L", "豆浆粉 原味 无糖 早餐",
])
kind("sweets", "食品/糖果巧克力", [
    "黑巧克力 85% 可可 无蔗糖", "牛奶巧克力 礼盒 情人节 送女友", "蜂蜜 天然 农家 土蜂蜜 500g", "水果硬糖 喜糖 婚庆", "手工牛轧糖 台湾风味 礼盒", "大白兔奶糖 怀旧 袋装",
])

# query -> {kind: grade, (kind, tag): grade}; a tagged entry overrides its kind's grade
QUERIES: dict[str, dict] = {
    "我需要一件适合春游的外套": {"light_jacket": 3, "shell_jacket": 3, "sun_jacket": 2, "hoodie": 2,
                                "winter_coat": 1},
    "春天穿的薄外套": {"light_jacket": 3, "sun_jacket": 2, "shell_jacket": 2, "hoodie": 2, "winter_coat": 1},
    "冬天很冷 想买件保暖的外套": {"winter_coat": 3, "shell_jacket": 2, "hoodie": 1, "light_jacket": 1},
    "去爬山穿什么外套防风防雨": {"shell_jacket": 3, "light_jacket": 2, "sun_jacket": 1},
    "夏天户外防晒穿的衣服": {"sun_jacket": 3, ("shirt", "sun"): 3, "hat": 2, "tshirt": 1},
    "iPhone 手机壳": {"phone_case": 1, ("phone_case", "iphone"): 3, "screen_protector": 1},
    "华为手机壳 防摔": {"phone_case": 1, ("phone_case", "huawei"): 3, "screen_protector": 1},
    "苹果手机充电器": {"charger": 2, ("charger", "iphone"): 3, "cable": 1, ("cable", "iphone"): 2,
                 "power_bank": 1},
    "笔记本电脑 Type-C 充电": {"charger": 1, ("charger", "laptop"): 3, "cable": 1, ("cable", "laptop"): 3,
                        "computer_acc": 1, "power_bank": 1},
    "降噪蓝牙耳机": {"earphones": 1, ("earphones", "anc"): 3, "speaker": 1},
    "跑步时听歌的耳机": {"earphones": 1, ("earphones", "sport"): 3, ("earphones", "anc"): 2},
    "出门充电宝 大容量": {"power_bank": 3, "charger": 1},
    "宿舍用的小台灯": {"lamp": 1, ("lamp", "desk"): 3},
    "学生宿舍需要买什么": {"lamp": 2, "storage": 2, "bedding": 2, "pillow": 1, "slippers": 1, ("lamp", "dorm"): 3,
                  ("storage", "dorm"): 3, ("bedding", "dorm"): 3},
    "颈椎不好 睡觉用的枕头": {"pillow": 2, ("pillow", "neck"): 3, "bedding": 1},
    "办公室午休": {"pillow": 1, ("pillow", "nap"): 3, "cup": 1},
    "上班带的保温杯": {"cup": 1, ("cup", "insulated"): 3},
    "家里做饭用的锅": {"cookware": 1, ("cookware", "pot"): 3, ("cookware", "appliance"): 2},
    "厨房小家电": {"cookware": 1, ("cookware", "appliance"): 3},
    "家里东西太多 怎么收纳": {"storage": 3},
    "新手在家健身": {"weights": 3, "yoga": 3, "sneakers": 1},
    "瑜伽垫 加厚 防滑": {"yoga": 1, ("yoga", "mat"): 3},
    "周末去露营要带什么": {"tent": 3, "backpack": 2, ("lamp", "camp"): 3, ("cup", "camp"): 2, "power_bank": 1,
                  "staples": 1},
    "春游野餐": {"tent": 2, ("tent", "picnic"): 3, "snacks": 2, "light_jacket": 1},
    "徒步登山装备": {"backpack": 3, "shell_jacket": 2, "sneakers": 2, "pants": 2, "tent": 1},
    "马拉松跑鞋": {"sneakers": 1, ("sneakers", "run"): 3},
    "打羽毛球": {"ball": 1, ("ball", "badminton"): 3},
    "骑自行车 安全": {"cycling": 2, ("cycling", "safety"): 3},
    "去游泳需要的东西": {"swim": 3, "towel": 1},
    "送给爸爸的茶叶礼盒": {"tea": 2, ("tea", "gift"): 3, "nuts": 1, ("nuts", "gift"): 2},
    "提神的饮品": {"coffee": 3, "tea": 2, "dairy": 1},
    "给孩子买的健康零食": {"snacks": 1, ("snacks", "kids"): 3, "nuts": 2, "dairy": 1},
    "减肥期间可以吃的零食": {"snacks": 1, ("snacks", "diet"): 3, "nuts": 2, "sweets": 1},
    "早餐喝什么": {"dairy": 2, ("dairy", "breakfast"): 3, ("staples", "breakfast"): 3, "coffee": 2},
    "过年送礼": {("tea", "gift"): 3, ("nuts", "gift"): 3, "sweets": 2, "tea": 1},
    "情人节礼物 送女朋友": {"sweets": 2, ("sweets", "valentine"): 3, "watch": 2, "earphones": 1},
    "夏天穿的透气T恤": {"tshirt": 3, "shirt": 2},
    "smart watch 运动 心率": {"watch": 2, ("watch", "heart"): 3},
    "yoga mat": {"yoga": 1, ("yoga", "mat"): 3},
    "wireless earbuds 蓝牙": {"earphones": 1, ("earphones", "wireless"): 3, "speaker": 1},
}


# --- attributes: the typed fields filters and facets use -------------------------------------
# Prices in yuan: each kind's usual band in a Chinese shop, read off its titles' weight and selling
# points by the authors; a product takes a point in its band by its position in the kind, ending in
# 9 as shop prices do. Not any real shop's prices.
PRICE_BANDS = {
    "light_jacket": (129, 459), "sun_jacket": (59, 199), "shell_jacket": (199, 899), "winter_coat": (299, 1299),
    "tshirt": (29, 99), "shirt": (69, 229), "hoodie": (79, 259), "dress": (99, 399), "pants": (59, 259),
    "sneakers": (159, 899), "hat": (19, 79), "socks": (19, 69), "bedding": (89, 499), "pillow": (39, 229),
    "storage": (19, 99), "cup": (29, 159), "cookware": (39, 499), "lamp": (39, 299), "towel": (19, 129),
    "slippers": (15, 69), "phone_case": (19, 99), "screen_protector": (9, 49), "charger": (29, 199),
    "cable": (9, 79), "power_bank": (69, 399), "earphones": (39, 1299), "speaker": (99, 599), "watch": (29, 1999),
    "computer_acc": (19, 499), "yoga": (29, 159), "weights": (39, 1299), "tent": (29, 599), "backpack": (49, 399),
    "ball": (19, 599), "cycling": (29, 1599), "swim": (19, 199), "tea": (49, 599), "coffee": (29, 159),
    "nuts": (29, 199), "snacks": (9, 99), "staples": (15, 129), "dairy": (19, 99), "sweets": (19, 159),
}
# Brands a Chinese shop stocks for each department (real, well-known brands, assigned in turn: which
# product carries which brand is made up). A title naming a brand keeps it.
BRANDS = {
    "服装": ["优衣库", "李宁", "安踏", "波司登", "骆驼", "太平鸟"],
    "家居": ["无印良品", "苏泊尔", "美的", "九阳", "富安娜", "名创优品"],
    "数码": ["小米", "华为", "绿联", "倍思", "漫步者", "罗技"],
    "运动": ["迪卡侬", "李宁", "探路者", "骆驼", "牧高笛", "红双喜"],
    "食品": ["三只松鼠", "良品铺子", "伊利", "蒙牛", "五芳斋", "农夫山泉"],
}
TITLE_BRANDS = {"华为": "华为", "小米": "小米", "Apple": "苹果", "苹果": "苹果", "OPPO": "OPPO"}
SEASONS = {"春": "春", "夏": "夏", "秋": "秋", "冬": "冬", "四季": "春|夏|秋|冬"}
COLOURS = ["米白", "白", "黑", "灰", "蓝", "红", "粉", "绿", "黄", "卡其", "棕", "紫", "橙"]
# Kinds a shop lists in colours, and the colours given in turn where the title names none (made up,
# as the brands are): what "蓝色连衣裙" can be read against.
COLOURED = ("服装", "家居/水杯", "家居/拖鞋", "家居/毛巾浴巾", "数码/手机配件/手机壳", "运动/健身/瑜伽", "运动/户外/背包")
PALETTE = ["黑", "白", "蓝", "灰", "红", "卡其", "绿", "粉"]


def attributes(index: int, position: int, size: int, name: str, category: str, title: str) -> dict:
    """price (yuan), brand, in_stock, season tags and colour of the index-th product (the
    position-th of its kind's size), deterministic."""
    low, high = PRICE_BANDS[name]
    spread = ((position + 1) * 0.6180339887) % 1.0  # golden-ratio steps: spread over the band, no repeats
    price = min(high, max(low, int((low + (high - low) * spread) // 10) * 10 + 9))
    named = next((brand for word, brand in TITLE_BRANDS.items() if word in title and "适用" not in title), None)
    department = BRANDS[category.split("/")[0]]
    seasons = sorted({s for word, tag in SEASONS.items() if word in title for s in tag.split("|")},
                     key="春夏秋冬".index)
    colour = next((c for c in COLOURS if c + "色" in title or (c in ("白", "黑") and c in title[:6])), "")
    if not colour and category.startswith(COLOURED):
        colour = PALETTE[(position * 3 + index) % len(PALETTE)]
    return {"price": price, "brand": named or department[(list(PRICE_BANDS).index(name) + position) % len(department)],
            "in_stock": "false" if index % 9 == 4 else "true", "season": "|".join(seasons),
            "colour": colour + "色" if colour else ""}


def grade(spec: dict, name: str, tags: set) -> int | None:
    tagged = [g for key, g in spec.items() if isinstance(key, tuple) and key[0] == name and key[1] in tags]
    if tagged:
        return max(tagged)
    return spec.get(name)


def main() -> None:
    products, seen = [], set()
    for name, (category, titles) in CATALOGUE.items():
        for title, tags in titles:
            if title in seen:
                raise ValueError(f"duplicate title {title}")
            seen.add(title)
            products.append((f"zh{len(products) + 1:04d}", title, category, name, tags))
    with open(HERE / "products.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        fields = ["price", "brand", "in_stock", "season", "colour"]
        out.writerow(["product_id", "title", "category", *fields])
        sizes = {name: len(titles) for name, (_, titles) in CATALOGUE.items()}
        positions: dict[str, int] = {}
        for i, (pid, title, category, name, _) in enumerate(products):
            position = positions[name] = positions.get(name, -1) + 1
            attrs = attributes(i, position, sizes[name], name, category, title)
            out.writerow([pid, title, category, *(attrs[f] for f in fields)])
    rows = []
    for query, spec in QUERIES.items():
        for pid, _, _, name, tags in products:
            g = grade(spec, name, tags)
            if g is not None:
                rows.append((query, pid, g))
        if not any(r[0] == query and r[2] == 3 for r in rows):
            raise ValueError(f"{query}: no product graded 3")  # every query must have an answer
    with open(HERE / "judgments.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["query", "product_id", "relevance"])
        out.writerows(rows)
    print(f"{len(products)} products, {len(QUERIES)} queries, {len(rows)} judgments")


if __name__ == "__main__":
    main()
