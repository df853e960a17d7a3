"""Realistic vocabularies for the synthetic collection, taken from real Met records and the Open
Access CSV (artists, their ULAN/Wikidata links, tag URLs, department names as they appear on objects).
"""

from __future__ import annotations

from typing import NamedTuple

# The 57 keys of a current Met object record, in the real order.
RECORD_KEYS: tuple[str, ...] = (
    "objectID", "isHighlight", "accessionNumber", "accessionYear", "isPublicDomain",
    "primaryImage", "primaryImageSmall", "additionalImages", "constituents", "department",
    "objectName", "title", "culture", "period", "dynasty", "reign", "portfolio", "artistRole",
    "artistPrefix", "artistDisplayName", "artistDisplayBio", "artistSuffix", "artistAlphaSort",
    "artistNationality", "artistBeginDate", "artistEndDate", "artistGender", "artistWikidata_URL",
    "artistULAN_URL", "objectDate", "objectBeginDate", "objectEndDate", "medium", "dimensions",
    "measurements", "creditLine", "geographyType", "city", "state", "county", "country", "region",
    "subregion", "locale", "locus", "excavation", "river", "classification",
    "rightsAndReproduction", "linkResource", "metadataDate", "repository", "objectURL", "tags",
    "objectWikidata_URL", "isTimelineWork", "GalleryNumber",
)  # fmt: skip

# GET /departments as recorded on 20 Jun 2026.
DEPARTMENTS: tuple[tuple[int, str], ...] = (
    (1, "American Decorative Arts"),
    (3, "Ancient West Asian Art"),
    (4, "Arms and Armor"),
    (5, "Arts of Africa, Oceania, and the Americas"),
    (6, "Asian Art"),
    (7, "The Cloisters"),
    (8, "The Costume Institute"),
    (9, "Drawings and Prints"),
    (10, "Egyptian Art"),
    (11, "European Paintings"),
    (12, "European Sculpture and Decorative Arts"),
    (13, "Greek and Roman Art"),
    (14, "Islamic Art"),
    (15, "The Robert Lehman Collection"),
    (16, "The Libraries"),
    (17, "Medieval Art"),
    (18, "Musical Instruments"),
    (19, "Photographs"),
    (21, "Modern Art"),
)

# Department names as they appear on object records (they differ from /departments).
OBJECT_DEPARTMENT_NAMES: dict[int, str] = {
    1: "The American Wing",
    3: "Ancient Near Eastern Art",
    4: "Arms and Armor",
    5: "The Michael C. Rockefeller Wing",
    6: "Asian Art",
    7: "The Cloisters",
    8: "Costume Institute",
    9: "Drawings and Prints",
    10: "Egyptian Art",
    11: "European Paintings",
    12: "European Sculpture and Decorative Arts",
    13: "Greek and Roman Art",
    14: "Islamic Art",
    15: "Robert Lehman Collection",
    16: "The Libraries",
    17: "Medieval Art",
    18: "Musical Instruments",
    19: "Photographs",
    21: "Modern and Contemporary Art",
}

# Tag term -> (AAT_URL, Wikidata_URL), from real records and the Open Access CSV.
TAG_URLS: dict[str, tuple[str, str]] = {
    "Men": ("http://vocab.getty.edu/page/aat/300025928", "https://www.wikidata.org/wiki/Q8441"),
    "Women": ("http://vocab.getty.edu/page/aat/300025943", "https://www.wikidata.org/wiki/Q467"),
    "Boys": ("http://vocab.getty.edu/page/aat/300247598", "https://www.wikidata.org/wiki/Q3010"),
    "Girls": ("http://vocab.getty.edu/page/aat/300247581", "https://www.wikidata.org/wiki/Q3031"),
    "Flowers": ("http://vocab.getty.edu/page/aat/300132399", "https://www.wikidata.org/wiki/Q506"),
    "Horses": ("http://vocab.getty.edu/page/aat/300250148", "https://www.wikidata.org/wiki/Q726"),
    "Birds": ("http://vocab.getty.edu/page/aat/300266506", "https://www.wikidata.org/wiki/Q5113"),
    "Boats": ("http://vocab.getty.edu/page/aat/300178749", "https://www.wikidata.org/wiki/Q35872"),
    "Trees": ("http://vocab.getty.edu/page/aat/300132410", "https://www.wikidata.org/wiki/Q10884"),
    "Portraits": (
        "http://vocab.getty.edu/page/aat/300015637",
        "https://www.wikidata.org/wiki/Q134307",
    ),
    "Landscapes": (
        "http://vocab.getty.edu/page/aat/300132294",
        "https://www.wikidata.org/wiki/Q191163",
    ),
    "Musical Instruments": (
        "http://vocab.getty.edu/page/aat/300041620",
        "https://www.wikidata.org/wiki/Q34379",
    ),
}


class Artist(NamedTuple):
    """One real artist as the Met describes them."""

    name: str
    constituent_id: int
    bio: str
    alpha_sort: str
    nationality: str
    begin: str
    end: str
    gender: str
    ulan: str
    wikidata: str


class ClassVocab(NamedTuple):
    """What objects of one classification look like in the records."""

    departments: tuple[int, ...]  # department ids, repeated for weight
    object_names: tuple[str, ...]
    media: tuple[str, ...]
    cultures: tuple[str, ...]
    artists: tuple[Artist, ...]


_ULAN = "http://vocab.getty.edu/page/ulan/"
_WD = "https://www.wikidata.org/wiki/"

CLASS_VOCAB: dict[str, ClassVocab] = {
    "Paintings": ClassVocab(
        departments=(11, 11, 11, 6, 21, 15, 1),
        object_names=("Painting", "Painting", "Painting", "Hanging scroll", "Handscroll", "Triptych"),
        media=(
            "Oil on canvas",
            "Oil on canvas",
            "Tempera on wood, gold ground",
            "Oil on oak panel",
            "Hanging scroll; ink and color on silk",
        ),
        cultures=("", "", "", "", "China", "Japan", "Italian", "French"),
        artists=(
            Artist("Vincent van Gogh", 16194, "Dutch, Zundert 1853–1890 Auvers-sur-Oise", "Gogh, Vincent van", "Dutch", "1853", "1890", "", _ULAN + "500115588", _WD + "Q5582"),
            Artist("Robert Campin", 16174, "Netherlandish, ca. 1375–1444 Tournai", "Campin, Robert", "Netherlandish", "1375", "1444", "", _ULAN + "500021163", _WD + "Q80442"),
            Artist("Hans Holbein the Younger", 16199, "German, Augsburg 1497/98–1543 London", "Holbein, Hans, the Younger", "German", "1497", "1543", "", _ULAN + "500005259", _WD + "Q48319"),
            Artist("Guo Xi", 1149, "Chinese, ca. 1000–ca. 1090", "Guo Xi", "Chinese", "1000", "1090", "", _ULAN + "500125758", _WD + "Q536645"),
            Artist("Ogata Kōrin", 1175, "Japanese, 1658–1716", "Kōrin", "Japanese", "1658", "1716", "", _ULAN + "500034109", _WD + "Q952938"),
            Artist("Florine Stettheimer", 14713, "American, Rochester, New York 1871–1944 New York, New York", "Stettheimer, Florine", "American", "1871", "1944", "Female", _ULAN + "500011029", _WD + "Q5461886"),
            Artist("Leonora Carrington", 16338, "Mexican (born England), Clayton Green, Lancashire 1917–2011 Mexico City", "Carrington, Leonora", "Mexican, born England", "1917", "2011", "Female", _ULAN + "500018196", _WD + "Q233207"),
            Artist("Kiyohara Yukinobu", 11986, "Japanese, 1643–1682", "Kiyohara Yukinobu", "Japanese", "1643", "1682", "Female", _ULAN + "500034433", _WD + "Q11560527"),
            Artist("Edward Hopper", 16199, "American, Nyack, New York 1882–1967 New York", "Hopper, Edward", "American", "1882", "1967", "", _ULAN + "500031212", _WD + "Q203401"),
        ),
    ),
    "Prints": ClassVocab(
        departments=(9, 9, 9, 6, 15),
        object_names=("Print", "Print", "Print", "Book"),
        media=(
            "Engraving",
            "Etching",
            "Woodcut",
            "Woodblock print (nishiki-e); ink and color on paper",
            "Drypoint, printed in black ink from one plate; first state of four",
        ),
        cultures=("", "", "", "Japan"),
        artists=(
            Artist("Albrecht Dürer", 16185, "German, Nuremberg 1471–1528 Nuremberg", "Dürer, Albrecht", "German", "1471", "1528", "", _ULAN + "500115493", _WD + "Q5580"),
            Artist("Rembrandt (Rembrandt van Rijn)", 16229, "Dutch, Leiden 1606–1669 Amsterdam", "Rembrandt (Rembrandt van Rijn)", "Dutch", "1606", "1669", "", _ULAN + "500011051", _WD + "Q5598"),
            Artist("Martin Schongauer", 16239, "German, Colmar ca. 1435/50–1491 Breisach", "Schongauer, Martin", "German", "1435", "1491", "", _ULAN + "500028143", _WD + "Q155575"),
            Artist("Utagawa Hiroshige", 16476, "Japanese, Tokyo (Edo) 1797–1858 Tokyo (Edo)", "Utagawa, Hiroshige", "Japanese", "1797", "1858", "", _ULAN + "500019641", _WD + "Q200798"),
            Artist("Kitagawa Utamaro", 1141, "Japanese, ca. 1754–1806", "Kitagawa Utamaro", "Japanese", "1754", "1806", "", _ULAN + "500054492", _WD + "Q272045"),
            Artist("Mary Cassatt", 161757, "American, Pittsburgh, Pennsylvania 1844–1926 Le Mesnil-Théribus, Oise", "Cassatt, Mary", "American", "1844", "1926", "Female", _ULAN + "500012368", _WD + "Q173223"),
            Artist("Goya (Francisco de Goya y Lucientes)", 16195, "Spanish, Fuendetodos 1746–1828 Bordeaux", "Goya (Francisco de Goya y Lucientes)", "Spanish", "1746", "1828", "", _ULAN + "500118936", _WD + "Q5432"),
        ),
    ),
    "Ceramics": ClassVocab(
        departments=(12, 12, 6, 14, 1),
        object_names=("Bowl", "Dish", "Plate", "Vase", "Jar", "Ewer", "Charger"),
        media=(
            "Maiolica (tin-glazed earthenware)",
            "Hard-paste porcelain",
            "Stonepaste; polychrome painted under transparent glaze",
            "Slip-decorated earthenware",
            "Porcelain painted in underglaze cobalt blue (Jingdezhen ware)",
        ),
        cultures=("Italian", "China", "British, Staffordshire", "Iran", "French", "Korea"),
        artists=(
            Artist("Thomas Toft", 3542, "active before 1663–died 1689", "Toft Thomas", "", "1589", "1689", "", _ULAN + "500099179", _WD + "Q7794495"),
            Artist("Bernard Palissy", 16506, "French, Agen, Lot-et-Garonne 1510–1590 Paris", "Palissy, Bernard", "French", "1510", "1590", "", _ULAN + "500027684", _WD + "Q524252"),
            Artist("Josiah Wedgwood and Sons", 16270, "British, Etruria, Staffordshire, 1759–present", "Wedgwood and Sons, Josiah", "British", "1759", "9999", "", _ULAN + "500269607", _WD + "Q595544"),
            Artist("Nicola da Urbino", 16216, "Italian, active by 1520–died ?1537/38 Urbino", "Nicola da Urbino", "Italian", "1520", "1538", "", _ULAN + "500023587", _WD + "Q3339918"),
        ),
    ),
    "Textiles": ClassVocab(
        departments=(12, 12, 14, 8, 5),
        object_names=("Textile fragment", "Tapestry", "Carpet", "Length", "Hanging", "Textile sample"),
        media=("Wool and silk", "Silk", "Cotton, printed", "Linen, wool; tapestry-woven"),
        cultures=("French", "British, London, Spitalfields", "Iran", "Egypt", "Peru", ""),
        artists=(
            Artist("Anna Maria Garthwaite", 16611, "British, 1690–1763", "Garthwaite, Anna Maria", "British", "1690", "1763", "Female", _ULAN + "500329976", _WD + "Q4767293"),
            Artist("Beauvais", 16282, "", "Beauvais", "", "", "", "", _ULAN + "500110803", _WD + "Q2566130"),
            Artist("David Kandel", 16407, "German, ca. 1520–ca. 1596", "Kandel, David", "German", "1515", "1601", "", _ULAN + "500005103", _WD + "Q1174935"),
        ),
    ),
    "Photographs": ClassVocab(
        departments=(19, 19, 19, 21),
        object_names=("Photograph", "Photograph", "Daguerreotype", "Polaroid"),
        media=(
            "Albumen silver print from glass negative",
            "Salted paper print from paper negative",
            "Gelatin silver print",
            "Daguerreotype",
        ),
        cultures=("",),
        artists=(
            Artist("Julia Margaret Cameron", 5493, "British (born India), Calcutta 1815–1879 Kalutara, Ceylon", "Cameron, Julia Margaret", "British, born India", "1815", "1879", "Female", _ULAN + "500118804", _WD + "Q230120"),
            Artist("Berenice Abbott", 16156, "American, Springfield, Ohio 1898–1991 Monson, Maine", "Abbott, Berenice", "American", "1898", "1991", "Female", _ULAN + "500020631", _WD + "Q231861"),
            Artist("Roger Fenton", 5480, "British, 1819–1869", "Fenton, Roger", "British", "1819", "1869", "", _ULAN + "500017263", _WD + "Q345666"),
            Artist("Carleton E. Watkins", 5484, "American, 1829–1916", "Watkins, Carleton E.", "American", "1829", "1916", "", _ULAN + "500002731", _WD + "Q2939083"),
            Artist("Gustave Le Gray", 5513, "French, 1820–1884", "Le Gray, Gustave", "French", "1820", "1884", "", _ULAN + "500000537", _WD + "Q982549"),
            Artist("Nadar", 16215, "French, Paris 1820–1910 Paris", "Nadar", "French", "1820", "1910", "", _ULAN + "500005199", _WD + "Q40116"),
        ),
    ),
    "Drawings": ClassVocab(
        departments=(9, 9, 15, 21, 11),
        object_names=("Drawing", "Drawing", "Drawing", "Album leaf"),
        media=(
            "Red and black chalk",
            "Pen and brown ink, brown wash, over black chalk.",
            "Watercolor over graphite on wove paper",
            "Graphite and pastel on brown paper",
        ),
        cultures=("",),
        artists=(
            Artist("Antoine Watteau", 16269, "French, Valenciennes 1684–1721 Nogent-sur-Marne", "Watteau, Antoine", "French", "1684", "1721", "", _ULAN + "500032644", _WD + "Q183221"),
            Artist("Georges Seurat", 16240, "French, Paris 1859–1891 Paris", "Seurat, Georges", "French", "1859", "1891", "", _ULAN + "500008873", _WD + "Q34013"),
            Artist("Peter Paul Rubens", 16235, "Flemish, Siegen 1577–1640 Antwerp", "Rubens, Peter Paul", "Flemish", "1577", "1640", "", _ULAN + "500002921", _WD + "Q5599"),
            Artist("Eugène Delacroix", 16182, "French, Charenton-Saint-Maurice 1798–1863 Paris", "Delacroix, Eugène", "French", "1798", "1863", "", _ULAN + "500115509", _WD + "Q33477"),
            Artist("Hanna Nagel", 14957, "German, Heidelberg 1907–1975 Heidelberg", "Nagel, Hanna", "German", "1907", "1975", "Female", _ULAN + "500030482", _WD + "Q1575726"),
            Artist("Egon Schiele", 16239, "Austrian, Tulln 1890–1918 Vienna", "Schiele, Egon", "Austrian", "1890", "1918", "", _ULAN + "500002633", _WD + "Q44032"),
        ),
    ),
}  # fmt: skip

# Roles other than the main artist, for second constituents.
SECONDARY_ROLES: tuple[str, ...] = ("Printer", "Publisher", "Former Attribution", "Workshop")
SECONDARY_NAMES: tuple[str, ...] = (
    "Monsieur LeRoy",
    "Hieronymus Cock",
    "Ambroise Vollard",
    "Workshop of Andrea della Robbia",
)

# Title words, combined per tag so titles read like real ones.
TITLE_SUBJECTS: dict[str, tuple[str, ...]] = {
    "Men": ("Portrait of a Man", "The Scholar", "A Standing Man", "The Cardplayers"),
    "Women": ("Portrait of a Woman", "The Letter", "Woman with a Parrot", "Young Woman Sewing"),
    "Boys": ("Boy with a Top", "Young Shepherd", "The Drummer Boy"),
    "Girls": ("Girl Reading", "Young Girl in a Garden", "The Flower Girl"),
    "Flowers": ("Vase of Flowers", "Chrysanthemums", "Irises", "Peonies"),
    "Horses": ("Horse and Groom", "The Horse Fair", "Rider on a Horse"),
    "Birds": ("Quail and Millet", "Birds on a Branch", "Herons in Reeds"),
    "Boats": ("Boats on the Shore", "The Ferry", "Fishing Boats at Dawn"),
    "Trees": ("Cypresses", "Pines in Snow", "The Old Oak"),
    "Portraits": ("Self-Portrait", "Portrait of a Gentleman", "Portrait of a Lady"),
    "Landscapes": ("View of Toledo", "Mountain Landscape", "The Valley at Evening"),
    "Musical Instruments": ("The Lute Player", "Concert Party", "The Guitar Lesson"),
}
UNTITLED: tuple[str, ...] = ("Fragment", "Untitled", "Ornament", "Study")
CREDIT_LINES: tuple[str, ...] = (
    "Gift of Arthur Sachs, 1916",
    "Rogers Fund, 1919",
    "Bequest of Mrs. H. O. Havemeyer, 1929",
    "Purchase, Joseph Pulitzer Bequest, 1917",
    "The Howard Mansfield Collection, Purchase, Rogers Fund, 1936",
    "Harris Brisbane Dick Fund, 1932",
    "Robert Lehman Collection, 1975",
    "Fletcher Fund, 1925",
)
PERIODS: dict[str, tuple[str, ...]] = {
    "Japan": ("Edo period (1615–1868)", "Meiji period (1868–1912)"),
    "China": ("Ming dynasty (1368–1644)", "Qing dynasty (1644–1911)"),
    "Korea": ("Joseon dynasty (1392–1910)",),
}
